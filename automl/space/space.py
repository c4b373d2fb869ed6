"""SearchSpace: a YAML tree of fixed values and searchable parameters, with conditions.

A mapping holding ``int``, ``float`` or ``choice`` is a parameter; any other mapping or list is
structure. A parameter or a whole mapping may carry ``when: {param: value | [values]}``: it is
active only when that holds. Condition names resolve like variables in nested scopes: first
beside the conditioned node, then outward to the top (``family`` inside a stage finds that
stage's family; ``training.optimizer.name`` works from anywhere).
"""

from __future__ import annotations

import copy
import graphlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from automl.config import TrialConfig
from automl.errors import ModelTooLarge, SpaceError
from automl.model_size import check_size
from automl.space.params import (
    SPEC_KINDS,
    ChoiceSpec,
    Condition,
    DefaultSuggester,
    FixedSuggester,
    FloatSpec,
    IntSpec,
    Param,
    Suggester,
    label,
)
from automl.space.yaml_source import load_with_lines

_SPEC_MODELS = {"int": (IntSpec, "range"), "float": (FloatSpec, "range"), "choice": (ChoiceSpec, "choices")}
_INACTIVE = object()


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


@dataclass
class _Fixed:
    value: Any


@dataclass
class _ParamNode:
    name: str


@dataclass
class _Mapping:
    children: dict[str, Any]
    when: dict | None
    conditions: tuple[Condition, ...] = ()


@dataclass
class _Parsed:
    specs: dict[str, tuple[str, Any, tuple]] = field(default_factory=dict)  # name -> kind, spec, path
    fixed: dict[str, Any] = field(default_factory=dict)
    fixed_paths: dict[str, tuple] = field(default_factory=dict)
    mappings: list[tuple[tuple, _Mapping]] = field(default_factory=list)  # conditional ones
    whens: list[tuple[tuple, dict, tuple]] = field(default_factory=list)  # node path, when as written, resolved


class SearchSpace:
    """A loaded, checked space; ``sample`` turns a suggester's answers into a TrialConfig dict."""

    def __init__(self, tree: dict, lines: dict[tuple, int], file: str = "<space>"):
        self.file = file
        self._raw = copy.deepcopy(tree)
        self._lines = lines
        self._parsed = _Parsed()
        self._tree = self._parse(tree, ())
        self.params: list[Param] = self._make_params()
        self._by_name = {p.name: p for p in self.params}
        self._check_configs()

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        tree, lines = load_with_lines(path)
        if not isinstance(tree, dict):
            raise SpaceError(str(path), 1, None, "a space file must be a mapping at the top level")
        return cls(tree, lines, str(path))

    def sample(self, suggester: Suggester | None = None) -> dict:
        """A configuration dict with only the active parameters present."""
        return self.materialize(self.suggest_all(suggester or DefaultSuggester()))

    def default(self) -> dict:
        return self.sample(DefaultSuggester())

    def suggest_all(self, suggester: Suggester) -> dict[str, Any]:
        """The values of the active parameters by name, asked in sampling order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self._hold(p.conditions, values):
                values[p.name] = suggester.suggest(p)
        return values

    def materialize(self, values: dict[str, Any], origins: dict | None = None) -> dict:
        """The configuration dict for these parameter values.

        ``origins``, when given, is filled with {config path: space path}: conditional list
        items drop out, so the two differ.
        """
        return self._build(self._tree, (), (), values, origins)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._raw, sort_keys=False)

    def rewritten(self, changes: dict[str, Any], file: str) -> SearchSpace:
        """A copy of this space with nodes replaced, as the tuning recipe narrows and widens it.

        ``changes`` maps a dotted configuration path (a parameter, a fixed value or a new key) to
        its new node: a parameter spec (see ``Param.node``) or a fixed value. Where a change
        removes values that a ``when`` names, the condition keeps the remaining ones, and a node
        whose condition can no longer hold is dropped. The result is checked like a loaded file.
        """
        tree = copy.deepcopy(self._raw)
        allows = {}
        for name, node in changes.items():
            path = self._path_of(name)
            _put(tree, path, node)
            if isinstance(node, dict) and any(k in node for k in SPEC_KINDS):
                kind, spec = self._parse_spec(node, path)
                allows[name] = Param(name, kind, spec, (), 0).contains
            else:
                allows[name] = lambda value, fixed=node: label(value) == label(fixed)
        dropped = []
        for path, when, conditions in self._parsed.whens:
            for key, condition in zip(when, conditions, strict=True):
                if condition.path in allows and _exists(tree, path):
                    kept = [v for v in condition.values if allows[condition.path](v)]
                    if not kept:
                        dropped.append(path)
                        break
                    _get(tree, path)["when"][key] = kept if len(kept) > 1 else kept[0]
        for path in sorted(set(dropped), reverse=True):  # inner and later nodes first: indices stay valid
            if _exists(tree, path):
                del _get(tree, path[:-1])[path[-1]]
        return SearchSpace(tree, {}, file)

    def _path_of(self, name: str) -> tuple:
        if name in self._parsed.specs:
            return self._parsed.specs[name][2]
        if name in self._parsed.fixed_paths:
            return self._parsed.fixed_paths[name]
        return tuple(int(part) if part.isdigit() else part for part in name.split("."))

    # --- parsing ------------------------------------------------------------------------

    def _line(self, path: tuple) -> int | None:
        return next((self._lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in self._lines), None)

    def _error(self, path: tuple, message: str) -> SpaceError:
        return SpaceError(self.file, self._line(path), _dotted(path) or None, message)

    def _parse(self, node: Any, path: tuple) -> Any:
        if isinstance(node, dict) and any(k in node for k in SPEC_KINDS):
            kind, spec = self._parse_spec(node, path)
            self._parsed.specs[_dotted(path)] = (kind, spec, path)
            return _ParamNode(_dotted(path))
        if isinstance(node, dict):
            when = node.get("when")
            children = {k: self._parse(v, path + (k,)) for k, v in node.items() if k != "when"}
            mapping = _Mapping(children, self._check_when(when, path) if when is not None else None)
            if when is not None:
                self._parsed.mappings.append((path, mapping))
            return mapping
        if isinstance(node, list):
            return [self._parse(item, path + (i,)) for i, item in enumerate(node)]
        self._parsed.fixed[_dotted(path)] = node
        self._parsed.fixed_paths[_dotted(path)] = path
        return _Fixed(node)

    def _check_when(self, when: Any, path: tuple) -> dict:
        if not isinstance(when, dict) or not when:
            raise self._error(path + ("when",), "when must be a mapping {parameter: value or [values]}")
        return when

    def _parse_spec(self, node: dict, path: tuple) -> tuple[str, Any]:
        kinds = [k for k in SPEC_KINDS if k in node]
        if len(kinds) > 1:
            raise self._error(path, f"a parameter has exactly one of int, float, choice; got {kinds}")
        kind = kinds[0]
        model, key = _SPEC_MODELS[kind]
        if kind != "choice" and not (isinstance(node[kind], list) and len(node[kind]) == 2):
            raise self._error(path + (kind,), f"{kind} takes [min, max], got {node[kind]!r}")
        if kind == "choice" and not isinstance(node[kind], list):
            raise self._error(path + (kind,), f"choice takes a list of options, got {node[kind]!r}")
        if "when" in node:
            self._check_when(node["when"], path)
        try:
            spec = model.model_validate({key if k == kind else k: v for k, v in node.items()})
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = err["loc"][0] if err["loc"] else getattr(err.get("ctx", {}).get("error"), "key", None)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                allowed = [kind, "default", "when"] + (["log", "step"] if kind != "choice" else [])
                msg = f"unknown key; a {kind} parameter takes {', '.join(allowed)}"
            elif err["type"] == "missing":
                msg = f"a {kind} parameter needs a {loc}"
            raise self._error(path + ((kind if loc == key else loc),) if loc else path, msg) from None
        return kind, spec

    def _resolve(self, scope: tuple, name: str, where: tuple) -> str:
        for i in range(len(scope), -1, -1):
            candidate = _dotted(scope[:i] + tuple(name.split(".")))
            if candidate in self._parsed.specs or candidate in self._parsed.fixed:
                return candidate
        raise self._error(where, f"condition on '{name}', which is not a parameter or value of this space")

    def _conditions(self, path: tuple, when: dict) -> tuple[Condition, ...]:
        """Resolve ``when`` of the node at ``path``; names are looked up from its parent outward."""
        return tuple(
            Condition(self._resolve(path[:-1], str(name), path + ("when", name)),
                      tuple(values) if isinstance(values, list) else (values,))
            for name, values in when.items()
        )

    def _make_params(self) -> list[Param]:
        for path, mapping in self._parsed.mappings:
            mapping.conditions = self._conditions(path, mapping.when)
            self._parsed.whens.append((path, mapping.when, mapping.conditions))
        params = []
        for name, (kind, spec, path) in self._parsed.specs.items():
            inherited = tuple(c for p, m in self._parsed.mappings if path[: len(p)] == p for c in m.conditions)
            own = self._conditions(path, spec.when) if spec.when else ()
            if own:
                self._parsed.whens.append((path, spec.when, own))
            params.append(Param(name, kind, spec, inherited + own, self._lines.get(path, 0)))
        by_name = {p.name: p for p in params}
        for p in params:
            for c in p.conditions:
                target = by_name.get(c.path)
                bad = [v for v in c.values if target is not None and not target.contains(v)]
                if bad:
                    raise self._error(self._parsed.specs[p.name][2] + ("when",),
                                      f"condition value {bad[0]!r} is not a possible value of "
                                      f"{c.path} ({target.describe()})")
        return _dependency_order(params, lambda name, msg: self._error(self._parsed.specs[name][2] + ("when",), msg))

    # --- sampling -----------------------------------------------------------------------

    def _hold(self, conditions: tuple[Condition, ...], values: dict[str, Any]) -> bool:
        for c in conditions:
            value = values.get(c.path, self._parsed.fixed.get(c.path, _INACTIVE))
            if value is _INACTIVE or label(value) not in {label(v) for v in c.values}:
                return False
        return True

    def _build(self, node: Any, space_path: tuple, config_path: tuple, values: dict, origins: dict | None):
        if origins is not None:
            origins[config_path] = space_path
        if isinstance(node, _Fixed):
            return node.value
        if isinstance(node, _ParamNode):
            return values.get(node.name, _INACTIVE)
        if isinstance(node, list):
            items = []
            for i, child in enumerate(node):
                value = self._build(child, space_path + (i,), config_path + (len(items),), values, origins)
                if value is not _INACTIVE:
                    items.append(value)
            return items
        if not self._hold(node.conditions, values):
            return _INACTIVE
        result = {}
        for key, child in node.children.items():
            value = self._build(child, space_path + (key,), config_path + (key,), values, origins)
            if value is not _INACTIVE:
                result[key] = value
        return result

    # --- checking against TrialConfig ---------------------------------------------------

    def _activating(self, param: Param, forced: dict[str, Any]) -> dict[str, Any]:
        """Extend ``forced`` so that ``param`` becomes active, where its conditions can hold."""
        for c in param.conditions:
            if c.path in self._by_name and c.path not in forced:
                forced[c.path] = c.values[0]
                self._activating(self._by_name[c.path], forced)
        return forced

    def _probe_values(self):
        """Parameter values that together visit every option, range end and conditional branch."""
        yield {}
        for p in self.params:
            for value in p.probe_values():
                yield self._activating(p, {p.name: value})
        for _, mapping in self._parsed.mappings:
            forced = {c.path: c.values[0] for c in mapping.conditions if c.path in self._by_name}
            for name in list(forced):
                self._activating(self._by_name[name], forced)
            yield forced

    def _probe_configs(self):
        """(values, configuration, origins) of each distinct probed configuration."""
        seen = set()
        for forced in self._probe_values():
            values = self.suggest_all(FixedSuggester(forced))
            if (key := label(values)) in seen:
                continue
            seen.add(key)
            origins: dict[tuple, tuple] = {}
            yield values, self.materialize(values, origins), origins

    def _check_configs(self) -> None:
        """Every probed configuration must validate as a TrialConfig, or we say where it breaks."""
        for values, config, origins in self._probe_configs():
            try:
                TrialConfig.model_validate(config)
            except pydantic.ValidationError as exc:
                raise self._config_error(exc.errors()[0], config, origins, values) from None

    def check_sizes(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        """Refuse, before any trial, a space with an option or range end whose model would exceed the
        memory cap on this input (see automl/model_size.py), naming the part that is too large."""
        for values, config, origins in self._probe_configs():
            try:
                check_size(TrialConfig.model_validate(config), input_shape, num_classes)
            except ModelTooLarge as exc:
                part = tuple(int(p) if p.isdigit() else p for p in exc.part.split("."))
                raise self._error(origins.get(part, part), exc.message + self._changed(values)) from None

    def _config_error(self, err: dict, config: dict, origins: dict, values: dict) -> SpaceError:
        node, config_path = config, ()
        for part in err["loc"]:  # pydantic inserts union tags into the location: skip them
            if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int)):
                node, config_path = node[part], config_path + (part,)
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":  # point at the tag field itself
            ctx, tag_field = err["ctx"], err["ctx"]["discriminator"].strip("'")
            config_path += (tag_field,) if isinstance(node, dict) and tag_field in node else ()
            msg = f"unknown {tag_field} {ctx['tag']!r}; allowed: {ctx['expected_tags']}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = f"missing required field '{err['loc'][-1]}'"
        return self._error(origins[config_path], msg + self._changed(values))

    def _changed(self, values: dict) -> str:
        """The parameters of a probed configuration that are not at their default, for a message."""
        changed = [f"{n}={v!r}" for n, v in values.items() if label(self._by_name[n].default) != label(v)]
        return f" (with {', '.join(changed[:3])})" if changed else ""


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _exists(tree: Any, path: tuple) -> bool:
    try:
        _get(tree, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _put(tree: dict, path: tuple, node: Any) -> None:
    """Set the node at ``path``, making the mappings on the way where they are missing."""
    for part in path[:-1]:
        if isinstance(tree, dict):
            tree = tree.setdefault(part, {})
        else:
            tree = tree[part]
    tree[path[-1]] = node


def _dependency_order(params: list[Param], error: Callable[[str, str], SpaceError]) -> list[Param]:
    """Document order, except that a parameter named in a condition comes before its users."""
    by_name = {p.name: p for p in params}
    graph = graphlib.TopologicalSorter({p.name: [c.path for c in p.conditions if c.path in by_name] for p in params})
    try:
        graph.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise error(cycle[0], f"conditions form a cycle: {' -> '.join(cycle)}") from None
    ordered: list[Param] = []
    placed: set[str] = set()

    def place(p: Param) -> None:
        if p.name not in placed:
            placed.add(p.name)
            for c in p.conditions:
                if c.path in by_name:
                    place(by_name[c.path])
            ordered.append(p)

    for p in params:
        place(p)
    return ordered
