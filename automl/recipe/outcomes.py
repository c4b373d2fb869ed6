"""What each stage of a tune found, as typed records.

A stage returns a ``StageResult`` whose ``outputs`` is its own dataclass (below); the tune adds
the stage's name, kind, seconds and budget and keeps the ``StageRecord`` in its study (one per
finished stage, through ``automl.hpo.records``). Later stages, the report and a resumed tune read
them back through ``Outcomes``, typed: a misspelt field fails the type checker and the unit
tests, not a tune minutes in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from automl.errors import UserError
from automl.recipe.budget import LEAST_STEADY


@dataclass
class NoOutputs:
    """The checks that only measure (sanity)."""


@dataclass
class TransferOutputs:
    space: str  # the space the later stages start from, the table's policy as its defaults
    policy: dict[str, Any]
    probes: list[dict]


@dataclass
class OverfitOutputs:
    space: str | None = None  # when the check needed another optimizer or a larger model: the space with it as default
    tried: list[dict] = field(default_factory=list)  # what was tried, each {"what", "verdict", "summary"}


@dataclass
class LRRangeOutputs:
    space: str  # the coarse search's space, its LR narrowed to the sweeps' band
    curves: dict[str, dict]  # per optimizer: lr, loss, suggested, band, ok
    shares: dict[str, float]  # the budget's shares, planned from the measured speed
    images_per_second: float  # the default configuration's training speed
    steadiness: float = LEAST_STEADY  # how steadily the host ran the default's sweep (budget.steadiness)


@dataclass
class SearchOutputs:
    study: str
    space: str
    epochs: int
    train_images: int
    val_images: int
    best_trial: int | None = None
    best_value: float | None = None
    round: int = 0  # refine rounds: 1, 2, ...; coarse: 0
    loop_seconds: float | None = None  # refine rounds: the seconds all rounds share (set by the first)
    again: bool = False  # refine rounds: whether the loop runs another round
    loop_why: str = ""  # ... and why (or why not)


@dataclass
class DiagnoseOutputs:
    source: str  # the search stage whose curves were read
    space: str  # the next refine round's space
    epochs: int  # its planned epochs per trial
    verdicts: dict[str, dict]  # per trial number: verdict, why, value
    first_trials: list[dict]  # the top trials' values, the next round's first trials
    shares: dict[str, float] | None = None  # the budget's, planned again from the searched speed (first round)


@dataclass
class FinalOutputs:
    export: str
    model_path: str
    source_stage: str
    source_trial: int


OUTPUTS: dict[str, type] = {"transfer": TransferOutputs, "sanity": NoOutputs, "overfit": OverfitOutputs,
                            "lr_range": LRRangeOutputs, "coarse": SearchOutputs, "diagnose": DiagnoseOutputs,
                            "refine": SearchOutputs, "final": FinalOutputs}
Outputs = TypeVar("Outputs")


@dataclass
class StageResult:
    """What a stage found and decided."""

    ok: bool  # False stops the tune: more search cannot fix what was found
    verdict: str
    summary: str  # what was measured and what it means
    outputs: Any = field(default_factory=NoOutputs)
    changes: list[str] = field(default_factory=list)  # what it changed for the next stages
    measured: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # search stages: the search's parent run


@dataclass
class StageRecord(StageResult):
    """A finished stage's result, as kept in the tune's study."""

    stage: str = ""  # its name: a kind, or for a later refine round "refine-2", "diagnose-2", ...
    kind: str = ""
    seconds: float = 0.0
    budget: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StageRecord:
        kind = data.get("kind") or data["stage"].split("-")[0]
        outputs_type = OUTPUTS[kind]
        names = {f.name for f in dataclasses.fields(outputs_type)}
        fields = {f.name for f in dataclasses.fields(cls)} - {"outputs", "kind"}
        try:
            outputs = outputs_type(**{k: v for k, v in (data.get("outputs") or {}).items() if k in names})
            return cls(**{k: v for k, v in data.items() if k in fields}, outputs=outputs, kind=kind)
        except TypeError as exc:  # a field this version needs is missing: written by an older automl
            raise UserError(f"stage {data['stage']}: its record was written by an older automl ({exc}); "
                            f"tune under another --study") from None


class Outcomes:
    """The finished stages' records, in the order they ran, with typed access."""

    def __init__(self, records: dict[str, StageRecord] | None = None):
        self.records: dict[str, StageRecord] = dict(records or {})

    def __contains__(self, stage: str) -> bool:
        return stage in self.records

    def get(self, stage: str) -> StageRecord | None:
        return self.records.get(stage)

    def add(self, record: StageRecord) -> None:
        self.records[record.stage] = record

    def outputs(self, stage: str, kind: type[Outputs]) -> Outputs:
        """The outputs of finished ``stage``, checked to be of ``kind``."""
        outputs = self.records[stage].outputs
        if not isinstance(outputs, kind):
            raise TypeError(f"stage {stage} holds {type(outputs).__name__}, not {kind.__name__}")
        return outputs

    @property
    def lr_range(self) -> LRRangeOutputs:
        return self.outputs("lr_range", LRRangeOutputs)

    def shares(self) -> dict[str, float] | None:
        """The budget's shares as the latest plan made them (lr_range, then the first diagnosis)."""
        plans = [r.outputs.shares for r in self.records.values()
                 if isinstance(r.outputs, (LRRangeOutputs, DiagnoseOutputs)) and r.outputs.shares]
        return plans[-1] if plans else None

    def searches(self) -> list[tuple[str, SearchOutputs]]:
        """The search stages that finished (coarse, then the refine rounds), in order."""
        return [(name, r.outputs) for name, r in self.records.items() if isinstance(r.outputs, SearchOutputs)]

    def rounds(self) -> list[tuple[str, SearchOutputs]]:
        return [(name, out) for name, out in self.searches() if out.round > 0]

    def seconds(self) -> float:
        return sum(r.seconds for r in self.records.values())

    def values(self) -> list[StageRecord]:
        return list(self.records.values())
