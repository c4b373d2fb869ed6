"""Searchable parameters of a space file: the ``int``, ``float`` and ``choice`` specs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, StrictBool, model_validator

SPEC_KINDS = ("int", "float", "choice")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    when: dict[str, Any] | None = None


class IntSpec(_Spec):
    range: tuple[int, int]
    log: StrictBool = False
    step: int = 1
    default: int

    @model_validator(mode="after")
    def _check(self):
        low, high = self.range
        _check_range(low, high, self.log, self.default)
        if self.step < 1:
            raise SpecError("step", f"step must be >= 1, got {self.step}")
        if self.log and self.step != 1:
            raise SpecError("step", "step cannot be combined with log")
        return self


class FloatSpec(_Spec):
    range: tuple[float, float]
    log: StrictBool = False
    step: float | None = None
    default: float

    @model_validator(mode="after")
    def _check(self):
        low, high = self.range
        _check_range(low, high, self.log, self.default)
        if self.step is not None and (self.step <= 0 or self.log):
            raise SpecError("step", "step must be > 0 and cannot be combined with log")
        return self


class ChoiceSpec(_Spec):
    choices: list[Any]
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _first_is_default(cls, data):
        if isinstance(data, dict) and "default" not in data and data.get("choices"):
            data = {**data, "default": data["choices"][0]}
        return data

    @model_validator(mode="after")
    def _check(self):
        if not self.choices:
            raise SpecError("choice", "choice needs at least one option")
        labels = [label(c) for c in self.choices]
        if len(set(labels)) != len(labels):
            raise SpecError("choice", f"choice options must be distinct, got {self.choices}")
        if label(self.default) not in labels:
            raise SpecError("default", f"default {self.default!r} is not one of the choices {self.choices}")
        return self


class SpecError(ValueError):
    """A spec check that failed on one key of the spec (``key`` as written in the file)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _check_range(low, high, log, default):
    kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    if low > high:
        raise SpecError(kind, f"min {low} > max {high}")
    if log and low <= 0:
        raise SpecError(kind, f"a log range needs min > 0, got min {low}")
    if not low <= default <= high:
        raise SpecError("default", f"default {default} is outside the range [{low}, {high}]")


def label(value: Any) -> str:
    """A stable text label of a value (options may be lists or mappings); 2 and 2.0 get the same one."""
    return json.dumps(_integral_floats_as_ints(value), sort_keys=True)


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Condition:
    """Active only when the parameter (or fixed value) at ``path`` takes one of ``values``."""

    path: str
    values: tuple


@dataclass(frozen=True)
class Param:
    """One searchable parameter, named by its dotted path in the configuration."""

    name: str
    kind: str  # int | float | choice
    spec: IntSpec | FloatSpec | ChoiceSpec
    conditions: tuple[Condition, ...]
    line: int

    @property
    def default(self) -> Any:
        return self.spec.default

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return label(value) in {label(c) for c in self.spec.choices}
        low, high = self.spec.range
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return low <= value <= high and (self.kind == "float" or float(value).is_integer())

    def probe_values(self) -> list[Any]:
        """Values that exercise every branch and both ends: used to check a space."""
        if self.kind == "choice":
            return list(self.spec.choices)
        return [self.spec.range[0], self.spec.range[1]]

    def node(self, **changes: Any) -> dict:
        """This parameter as a space-file spec (conditions kept), with ``changes`` such as
        ``range=[a, b]``, ``choices=[...]`` or ``default=v``: how the recipe rewrites a space."""
        spec = {**self.spec.model_dump(exclude_none=True), **changes}
        key = "choices" if self.kind == "choice" else "range"
        node = {self.kind: list(spec.pop(key)), **spec}
        if self.kind == "float" and node.get("step") is None:
            node.pop("step", None)
        if not node.get("log", True):
            node.pop("log")
        if self.kind == "int" and node.get("step") == 1:
            node.pop("step")
        return node

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {self.spec.choices}"
        low, high = self.spec.range
        return f"{self.kind} in [{low}, {high}]" + (" (log)" if self.spec.log else "")


class Suggester(Protocol):
    """What a search backend provides: one value per parameter, asked in a fixed order."""

    def suggest(self, param: Param) -> Any: ...


class DefaultSuggester:
    """Every parameter at its default: the space's default configuration."""

    def suggest(self, param: Param) -> Any:
        return param.default


class FixedSuggester:
    """Given values where named, defaults elsewhere (probing, warm starts, replays)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def suggest(self, param: Param) -> Any:
        return self.values.get(param.name, param.default)


class OptunaSuggester:
    """Adapter for an Optuna trial (or anything with Optuna's ``suggest_*`` methods)."""

    def __init__(self, trial):
        self.trial = trial

    def suggest(self, param: Param) -> Any:
        spec = param.spec
        if param.kind == "int":
            return self.trial.suggest_int(param.name, *spec.range, step=spec.step, log=spec.log)
        if param.kind == "float":
            return self.trial.suggest_float(param.name, *spec.range, step=spec.step, log=spec.log)
        if _optuna_primitive(spec.choices):
            return self.trial.suggest_categorical(param.name, spec.choices)
        # Optuna stores only primitive choices: suggest the option's label, map it back.
        by_label = {label(c): c for c in spec.choices}
        return by_label[self.trial.suggest_categorical(param.name, list(by_label))]

    @staticmethod
    def stored_value(param: Param, value: Any) -> Any:
        """How Optuna stores ``value`` of ``param`` (e.g. to enqueue a known configuration)."""
        if param.kind == "choice" and not _optuna_primitive(param.spec.choices):
            return label(value)
        return value


def _optuna_primitive(choices: list[Any]) -> bool:
    return all(c is None or isinstance(c, (bool, int, float, str)) for c in choices)


