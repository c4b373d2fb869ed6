"""With a trained backbone: measure the data's size and likeness to the backbone's data, and
start the later stages from the transfer-learning table's policy for that cell."""

from __future__ import annotations

import pandas as pd

from automl.recipe import adjust
from automl.recipe.outcomes import StageResult, TransferOutputs
from automl.recipe.stage import Stage
from automl.space import SearchSpace


def reuses_trained_backbone(space: SearchSpace) -> bool:
    """Whether the stage has something to read: an untrained backbone (weights: random) is an
    architecture only, trained from scratch, with no learned features to probe."""
    spec = space.default()["model"].get("backbone")
    return spec is not None and spec.get("weights", "pretrained") != "random"


class Transfer(Stage):
    kind, share = "transfer", 0.03

    def run(self, ctx, seconds):
        from automl.recipe import transfer as policy

        reading = policy.read(ctx.default_config().model.backbone, ctx.data, ctx.settings.seed)
        changes, notes = adjust.start_from(ctx.space, "model.backbone", reading.policy)
        path = ctx.settings.folder / "spaces" / "transfer.yaml"
        space = ctx.write_space(ctx.space.rewritten(changes, str(path)), "transfer", self.name)
        measured = {"images_per_class": reading.per_class, "probe_gain": reading.gain,
                    "probe_gain_se": reading.gain_error,
                    **{f"probe_cut{p['cut']}_{kind}": p[kind] for p in reading.probes for kind in ("pretrained",
                                                                                                   "random")}}
        return StageResult(True, reading.cell.replace(" and ", "_"), reading.why, changes=notes, measured=measured,
                           outputs=TransferOutputs(space=space, policy=reading.policy, probes=reading.probes))

    def report(self, record, view):
        probes = pd.DataFrame(record.outputs.probes).rename(
            columns={"pretrained": "probe accuracy, trained backbone", "random": "probe accuracy, untrained"})
        yield "Linear probes on the backbone's pooled features (cut: stages dropped from its top):\n\n"
        yield probes.to_markdown(index=False, floatfmt=(".0f", ".3f", ".3f")) + "\n"  # cut: an integer
