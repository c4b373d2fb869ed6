"""Step 3: sweep the learning rate for each kind of optimizer the space offers; the searches
search the union of the bands found. The default's sweep also measures the training speed the
budget is planned from."""

from __future__ import annotations

from automl import plots
from automl.recipe import adjust, budget
from automl.recipe.outcomes import LRRangeOutputs, StageResult
from automl.recipe.stage import Stage
from automl.recipe.stages.checks import ADAPTIVE, OPTIMIZER

MAX_SWEEPS = 4  # LR range tests per tune: one per kind of optimizer the space offers, the default first


class LRRange(Stage):
    kind, share = "lr_range", 0.07

    def run(self, ctx, seconds):
        from automl.recipe.checks import lr_range_test

        param = next((p for p in ctx.space.params if p.name == OPTIMIZER), None)
        default = ctx.default_config().training.optimizer.name
        names, kinds = [], set()
        for name in [default] + [c for c in (param.spec.choices if param else []) if c != default]:
            kind = "adam" if name in ADAPTIVE else name
            if kind not in kinds:  # the first of each kind stands for the others
                names.append(name)
                kinds.add(kind)
        sweeps, curves = {}, {}
        for name in names[:MAX_SWEEPS]:
            config = ctx.default_config(**({OPTIMIZER: name} if param else {}))
            sweeps[name] = sweep = lr_range_test(config, ctx.data, seed=ctx.settings.seed)
            curves[name] = {"lr": _rounded(sweep.learning_rates), "loss": _rounded(sweep.losses),
                            "suggested": sweep.suggested, "band": list(sweep.band), "ok": sweep.finding.ok}
        found = [s for s in sweeps.values() if s.finding.ok]
        if found:
            band = (min(s.band[0] for s in found), max(s.band[1] for s in found))
            suggested = sweeps[default].suggested if sweeps[default].finding.ok else found[0].suggested
            changes, notes = adjust.narrow_lr(ctx.space, band, suggested)
            path = ctx.settings.folder / "spaces" / "coarse.yaml"
            coarse = ctx.space.rewritten(changes, str(path))
            summary = " ".join(f"{name}: {s.finding.summary}" for name, s in sweeps.items())
            verdict = "healthy"
        else:
            coarse, notes, verdict = ctx.space, ["learning rate: the space's own range (no band found)"], "no_decrease"
            summary = "No sweep found a rate where the loss falls; the coarse search keeps the space's LR range."
        space = ctx.write_space(coarse, "coarse", self.name)
        ctx.log_figure(plots.lr_range(curves), "lr_range.png")
        first = sweeps[default].finding.measured
        speed = first["images_per_second"]
        shares, plan = _plan(ctx, speed)
        return StageResult(True, verdict, summary, changes=[*notes, plan], measured=first,
                           outputs=LRRangeOutputs(space=space, curves=curves, shares=shares, images_per_second=speed,
                                                  steadiness=first["steadiness"]))

    def report(self, record, view):
        if record.outputs.curves:
            yield view.figure(plots.lr_range(record.outputs.curves), "lr_range.png", "learning-rate range test")


def _plan(ctx, images_per_second: float) -> tuple[dict[str, float], str]:
    """The budget's shares from the measured speed: time for the final training first, as many
    epochs as the space's configuration names, as far as the searches keep what they need."""
    d = ctx.data
    final_images = len(d.x_train) + len(d.x_val)
    remaining = ctx.budget.remaining()
    epochs = ctx.default_config().training.epochs
    searches = budget.least_search_seconds(images_per_second, min(ctx.settings.coarse_epochs, epochs),
                                           len(d.x_train), len(d.x_val))
    shares = budget.planned_shares(ctx.budget.usual, images_per_second, final_images, remaining, epochs, searches)
    later = {s: remaining * shares[s] / sum(shares[t] for t in budget.PLANNED) for s in budget.PLANNED}
    epoch = final_images / images_per_second
    return shares, (f"budget: the default model trains {images_per_second:.0f} images/s, so an epoch over the "
                    f"{final_images} images of the final training takes about {epoch:.1f} s; of the {remaining:.0f} "
                    f"s left, coarse gets {later['coarse']:.0f}, refine {later['refine']:.0f} and final "
                    f"{later['final']:.0f}")


def _rounded(values: list[float]) -> list[float]:
    return [float(f"{v:.5g}") for v in values]
