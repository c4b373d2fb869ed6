"""Safe YAML loading that remembers the line of every value, so errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from automl.errors import SpaceError

Path_ = tuple  # a path into the document: keys and list indices
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = (yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG)


def load_with_lines(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    """Load one YAML document with the safe loader; return its value and {path: line}."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(file, None, None, f"cannot read file: {exc.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpaceError(file, None, None, "file is empty")
        lines: dict[Path_, int] = {}
        value = _construct(loader, node, (), lines, file)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SpaceError(file, line, None, f"invalid YAML: {exc.problem}") from None
    finally:
        loader.dispose()
    return value, lines


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict, file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise SpaceError(file, lines[path], _dotted(path), f"invalid YAML: tag {node.tag} is not allowed")
    if isinstance(node, yaml.MappingNode):
        written = set()
        for key_node, _ in node.value:  # a key written twice is an error; one that overrides a merge is not
            key = loader.construct_object(key_node, deep=True) if key_node.tag != _MERGE_TAG else None
            if key is not None and not isinstance(key, str):
                raise SpaceError(file, key_node.start_mark.line + 1, _dotted(path),
                                 f"keys must be strings, got {key!r}")
            if key in written:
                raise SpaceError(file, key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")
            written.add(key)
        loader.flatten_mapping(node)  # resolve merge keys (<<): merged pairs first, so written keys win
        result = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            result[key] = _construct(loader, value_node, path + (key,), lines, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top level)"
