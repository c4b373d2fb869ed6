"""A stage of the recipe: one object with its name, its share of the budget, what it does and
its section of the report. ``automl.recipe.plan`` puts them in order.

Stages import what they train with inside ``run``, so the plan can be read (CLI help, reports)
without loading Keras.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from automl.recipe.context import ReportView, StageContext
    from automl.recipe.outcomes import StageRecord, StageResult


class Stage:
    kind: ClassVar[str]
    share: ClassVar[float]  # its usual share of the budget (the plan may re-share the searches')
    search: ClassVar[bool] = False  # a search opens its own MLflow run; the others get a stage run

    def __init__(self, round: int = 1):
        self.round = round  # refine rounds (and their diagnoses) 2, 3, ... of the loop

    @property
    def name(self) -> str:
        return self.kind if self.round == 1 else f"{self.kind}-{self.round}"

    def allot(self, ctx: StageContext, later: list[Stage]) -> float:
        """The seconds this stage may take: its share of what it and the later stages have left."""
        return ctx.budget.allot(self.kind, [s.kind for s in later])

    def run(self, ctx: StageContext, seconds: float) -> StageResult:
        raise NotImplementedError

    def report(self, record: StageRecord, view: ReportView) -> Iterable[str]:
        """Markdown beyond the record's summary and changes (tables, figures)."""
        return ()
