"""Safe YAML loading that remembers the line of every value, so errors can point at it.

A space file is small and written by hand, so anything far larger is refused before it costs
time or memory: only regular files (a FIFO would block, ``/dev/zero`` never ends) of at most
``MAX_BYTES``, nesting at most ``MAX_DEPTH`` deep (PyYAML composes recursively), and at most
``MAX_VALUES`` values once aliases are expanded (a few hundred bytes of nested aliases, the
"billion laughs", expand to 10^9 values).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from automl.errors import SpaceError

Path_ = tuple  # a path into the document: keys and list indices
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = (yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG)
# full.yaml, the largest shipped space, is 9 KB, 6 levels deep and holds 780 values; checking a space
# probes every option, so its cost grows with the square of the values: 3,000 take seconds
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 3_000


def load_with_lines(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    """Load one YAML document with the safe loader; return its value and {path: line}."""
    file = str(path)
    text = _read_text(file)
    loader = None
    try:
        loader = _BoundedLoader(text, file)
        node = loader.get_single_node()
        if node is None:
            raise SpaceError(file, None, None, "file is empty")
        lines: dict[Path_, int] = {}
        value = _Builder(loader, file, lines).construct(node, ())
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SpaceError(file, line, None, f"invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids (e.g. a raw escape): it has no mark
        line = text[: exc.position].count("\n") + 1
        raise SpaceError(file, line, None, f"invalid YAML: unacceptable character #x{exc.character:04x}: "
                                           f"{exc.reason}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return value, lines


def _read_text(file: str) -> str:
    try:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode):
            raise SpaceError(file, None, None, "not a regular file (a space file is a YAML text file)")
        if info.st_size > MAX_BYTES:
            raise SpaceError(file, None, None, f"file too large ({info.st_size:,} bytes; a space file is at most "
                                               f"{MAX_BYTES:,})")
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # the size may have changed since stat
    except OSError as exc:
        raise SpaceError(file, None, None, f"cannot read file: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise SpaceError(file, None, None, f"file too large (more than {MAX_BYTES:,} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpaceError(file, line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                           f"{exc.start})") from None


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing documents nested deeper than MAX_DEPTH before it recurses further."""

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file, self.depth = file, 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise SpaceError(self.file, line, None, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Python values from composed nodes, with the line of each; counts values as aliases expand."""

    def __init__(self, loader: yaml.SafeLoader, file: str, lines: dict[Path_, int]):
        self.loader, self.file, self.lines, self.values = loader, file, lines, 0

    def construct(self, node: yaml.Node, path: Path_) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise SpaceError(self.file, node.start_mark.line + 1, None,
                             f"more than {MAX_VALUES:,} values (aliases expand to too many)")
        lines, file, loader = self.lines, self.file, self.loader
        lines[path] = node.start_mark.line + 1
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            raise SpaceError(file, lines[path], _dotted(path), f"invalid YAML: tag {node.tag} is not allowed")
        if isinstance(node, yaml.MappingNode):
            written = set()
            for key_node, _ in node.value:  # a key written twice is an error; one that overrides a merge is not
                if key_node.tag == _MERGE_TAG:
                    continue
                key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    shown = key if key is not None else f"a {key_node.id}"
                    raise SpaceError(file, key_node.start_mark.line + 1, _dotted(path),
                                     f"keys must be strings, got {shown!r}")
                if key in written:
                    raise SpaceError(file, key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")
                written.add(key)
            loader.flatten_mapping(node)  # resolve merge keys (<<): merged pairs first, so written keys win
            result = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):  # a merged mapping's key, not checked above
                    raise SpaceError(file, key_node.start_mark.line + 1, _dotted(path), "keys must be strings")
                result[key] = self.construct(value_node, path + (key,))
                lines[path + (key,)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.construct(item, path + (i,)) for i, item in enumerate(node.value)]
        return loader.construct_object(node)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top level)"
