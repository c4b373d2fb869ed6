"""The recipe's first checks on the space's default configuration: the initial loss (step 1)
and overfitting a few batches (step 2), before any budget goes to searching."""

from __future__ import annotations

import math

from automl.recipe import adjust
from automl.recipe.outcomes import OverfitOutputs, StageResult
from automl.recipe.stage import Stage

OPTIMIZER = "training.optimizer.name"
# Adam's variants move the weights by about the learning rate whatever the gradient's scale, so
# they share one good range (AdamW's decoupled decay and Nadam's look-ahead do not shift it).
ADAPTIVE = ("adam", "adamw", "nadam", "adamax")
ADAPTIVE_LR = 1e-3  # Keras's own default for Adam and its variants, where another optimizer is tried


def _result(finding, **extra) -> StageResult:
    return StageResult(finding.ok, finding.verdict, finding.summary, measured=finding.measured, **extra)


class Sanity(Stage):
    kind, share = "sanity", 0.02

    def run(self, ctx, seconds):
        from automl.recipe.checks import check_initial_loss

        return _result(check_initial_loss(ctx.default_config(), ctx.data, seed=ctx.settings.seed))


class Overfit(Stage):
    """Memorize a few batches. When that fails, first what the recipe says to try, within the
    space: for a loss that diverged or crawled, the end of the LR range in the helpful direction
    (the LR range test then picks the rate); for a model that cannot memorize, another kind of
    optimizer the space offers, then a larger model from the space (the later stages start from
    the first that memorizes). Only when none does, or the labels carry no signal, it stops."""

    kind, share = "overfit", 0.04

    def run(self, ctx, seconds):
        from automl.recipe.checks import check_overfit

        seed = ctx.settings.seed
        finding = check_overfit(ctx.default_config(), ctx.data, seed=seed, seconds=seconds)
        if finding.ok:
            return _result(finding, outputs=OverfitOutputs())
        tried = []
        for what, values in remedies(ctx.space, finding.verdict):
            ctx.say(f"overfit: {finding.verdict}; trying {what}")
            retry = check_overfit(ctx.default_config(**values), ctx.data, seed=seed)
            tried.append({"what": what, "verdict": retry.verdict, "summary": retry.summary})
            if not retry.ok:
                continue
            summary = f"With the default configuration: {finding.summary} With {what}: {retry.summary}"
            if set(values) == {adjust.LR}:  # the LR range test picks the learning rate anyway
                return StageResult(True, "healthy", summary, changes=["the LR range test picks the learning rate"],
                                   measured=retry.measured, outputs=OverfitOutputs(tried=tried))
            changes, notes = adjust.defaults_to(ctx.space, values)
            path = ctx.settings.folder / "spaces" / "overfit.yaml"
            space = ctx.write_space(ctx.space.rewritten(changes, str(path)), "overfit", self.name)
            return StageResult(True, "healthy", summary, changes=notes, measured=retry.measured,
                               outputs=OverfitOutputs(space=space, tried=tried))
        advice = {"diverged": f"lower the learning-rate range of {ctx.settings.space}",
                  "lr_too_low": f"raise the learning-rate range of {ctx.settings.space}",
                  "cannot_overfit": "offer a larger model or another optimizer in the space"}.get(finding.verdict)
        also = "".join(f" With {t['what']}: {t['verdict']}." for t in tried)
        return StageResult(False, finding.verdict, finding.summary + also + (f" Next: {advice}." if advice else ""),
                           measured=finding.measured, outputs=OverfitOutputs(tried=tried))


def remedies(space, verdict: str) -> list[tuple[str, dict]]:
    """What to try, in order, for a default configuration that failed to memorize with ``verdict``:
    (what, parameter values). A loss that diverged: the lowest LR the space allows, then another
    kind of optimizer; one that crawled: the highest LR, another optimizer, a larger model; a
    model that fits little though its loss fell: another optimizer, a larger model."""
    if verdict not in ("diverged", "lr_too_low", "cannot_overfit"):  # no signal in the labels: the data's fault
        return []
    params = {p.name: p for p in space.params}
    lr_param = params.get(adjust.LR)
    tries = []
    if verdict != "cannot_overfit" and lr_param is not None and lr_param.kind == "float":
        lr = space.default()["training"]["optimizer"]["learning_rate"]
        end = lr_param.spec.range[0 if verdict == "diverged" else 1]
        if not math.isclose(end, lr):
            tries.append((f"learning rate {end:g}, the space's {'lowest' if verdict == 'diverged' else 'highest'}",
                          {adjust.LR: end}))
    other = _other_optimizer(space, params.get(OPTIMIZER), lr_param)
    if other:
        tries.append(other)
    larger = adjust.larger_model(space) if verdict != "diverged" else {}
    if larger:
        tries.append(("a larger model (" + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in larger.items()) + ")",
                      larger))
    return tries


def _other_optimizer(space, optimizer, lr_param) -> tuple[str, dict] | None:
    """The first optimizer the space offers of another kind than the default's (the LR sweeps
    compare the kinds later); Adam's family at its usual rate."""
    if optimizer is None:
        return None
    default = space.default()["training"]["optimizer"]["name"]
    kind = "adam" if default in ADAPTIVE else default
    for name in optimizer.spec.choices:
        if ("adam" if name in ADAPTIVE else name) == kind:
            continue
        values = {OPTIMIZER: name}
        if name in ADAPTIVE and lr_param is not None and lr_param.contains(ADAPTIVE_LR):
            values[adjust.LR] = ADAPTIVE_LR
        return f"optimizer {name}" + (f" at lr {ADAPTIVE_LR:g}" if adjust.LR in values else ""), values
    return None
