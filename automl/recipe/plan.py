"""The recipe, in order: [transfer ->] sanity -> overfit -> lr_range -> coarse -> diagnose ->
refine [-> diagnose-2 -> refine-2 ...] -> final. Transfer runs for a space with a trained
backbone; the loop adds a diagnose and refine round while the last one paid."""

from __future__ import annotations

from automl.errors import UserError, printable
from automl.recipe.outcomes import Outcomes, SearchOutputs, StageRecord
from automl.recipe.stage import Stage
from automl.recipe.stages.checks import Overfit, Sanity
from automl.recipe.stages.final import Final
from automl.recipe.stages.lr_range import LRRange
from automl.recipe.stages.searches import Coarse, Diagnose, Refine
from automl.recipe.stages.transfer import Transfer, reuses_trained_backbone
from automl.space import SearchSpace

RECIPE: tuple[type[Stage], ...] = (Transfer, Sanity, Overfit, LRRange, Coarse, Diagnose, Refine, Final)
STAGES = tuple(stage.kind for stage in RECIPE)  # what --until takes
SHARES = {stage.kind: stage.share for stage in RECIPE}  # the budget's usual shares


def check_until(until: str | None) -> None:
    """``--until``: a kind of stage of the recipe."""
    if until is not None and until not in STAGES:
        raise UserError(f"--until {printable(until)}: not a stage; the stages: {', '.join(STAGES)}")


def plan(space: SearchSpace, outcomes: Outcomes) -> list[Stage]:
    """The stages to run, as far as the finished ones decide: one more round after each refine
    round whose record says the loop goes on."""
    stages: list[Stage] = [kind() for kind in RECIPE if kind is not Transfer or reuses_trained_backbone(space)]
    at = next(i for i, s in enumerate(stages) if isinstance(s, Refine))
    round = 1
    while (done := outcomes.get(stages[at].name)) is not None and isinstance(done.outputs, SearchOutputs) \
            and done.outputs.again:
        round += 1
        stages[at + 1:at + 1] = [Diagnose(round), Refine(round)]
        at += 2
    return stages


def stage_of(record: StageRecord) -> Stage:
    """The stage that wrote ``record`` (its round from its name: refine-2 is round 2)."""
    kind = next(k for k in RECIPE if k.kind == record.kind)
    return kind(int(record.stage.rsplit("-", 1)[1]) if "-" in record.stage else 1)
