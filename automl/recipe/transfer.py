"""Where a tune with a backbone starts: the transfer-learning table every course teaches, with
the data set's size and its similarity to the backbone's data measured rather than guessed.

==========  ===================================  =========================================
data        similar to the backbone's            different
==========  ===================================  =========================================
small       freeze the backbone, train a head    classify an earlier stage's features, or
                                                 fine-tune everything with a small LR
large       warm the head up, then unfreeze      train the whole model
            from the top with a small LR
==========  ===================================  =========================================

Size: training images per class, against ``SMALL_PER_CLASS``. Similarity: a linear probe
(logistic regression) on the backbone's pooled features at the ends of its top stages, against
the same probe on the same architecture with random weights. Random convolutional features
are a fair baseline, far above chance; the trained ones are *similar* data's features when
they make at most ``SIMILAR`` times the random ones' errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from automl.config import Backbone
from automl.data import Dataset, subsample

SMALL_PER_CLASS = 1000  # fewer training images per class is "small" (ImageNet has about 1,300)
SIMILAR = 2 / 3  # at most this share of the random features' probe errors
PROBE_TRAIN, PROBE_VAL = 2000, 1000  # images the probe fits and scores on
PROBE_STAGES = 3  # the top stage ends probed: cut 0, 1, 2
FINE_TUNE_LR = 0.1  # the usual advice: about a tenth of the learning rate that trains the head


@dataclass
class Reading:
    """What the tune measured and the policy it starts from."""

    per_class: float
    small: bool
    probes: list[dict]  # per cut: pretrained and random probe accuracies
    cut: int  # the cut whose pretrained features probe best
    similar: bool
    cell: str
    policy: dict  # Backbone field -> value
    why: str
    notes: list[str] = field(default_factory=list)


def read(spec: Backbone, data: Dataset, seed: int) -> Reading:
    per_class = len(data.y_train) / data.num_classes
    small = per_class < SMALL_PER_CLASS
    part = subsample(data, PROBE_TRAIN, PROBE_VAL, seed)
    pretrained = _probe(spec, part, seed)
    untrained = _probe(spec.model_copy(update={"weights": "random"}), part, seed)
    probes = [{"cut": cut, "pretrained": p, "random": r}
              for cut, (p, r) in enumerate(zip(pretrained, untrained, strict=True))]
    best = max(probes, key=lambda p: p["pretrained"])  # the first (highest) stage of equals
    similar = 1 - best["pretrained"] <= SIMILAR * (1 - best["random"])
    cell = f"{'small' if small else 'large'} and {'similar' if similar else 'different'}"
    policy, action = _policy(small, similar, best["cut"])
    size = (f"{per_class:.0f} training images per class ({'<' if small else '>='} {SMALL_PER_CLASS}: "
            f"{'small' if small else 'large'})")
    likeness = (f"a linear probe on the backbone's features at cut {best['cut']} scores {best['pretrained']:.3f}, "
                f"against {best['random']:.3f} for the same network untrained (errors "
                f"{'at most' if similar else 'more than'} {SIMILAR:.2f}x the untrained's: "
                f"{'similar' if similar else 'different'})")
    return Reading(per_class, small, probes, best["cut"], similar, cell, policy,
                   f"{size}; {likeness}. Cell: {cell}, so {action}.")


def _policy(small: bool, similar: bool, cut: int) -> tuple[dict, str]:
    fixed = {"cut": cut, "warmup_epochs": 0, "unfreeze_every": 0, "fine_tune_lr": FINE_TUNE_LR}
    if small and similar:
        return {**fixed, "trainable": "head"}, "the backbone stays frozen and a new head trains"
    if small and cut > 0:
        return ({**fixed, "trainable": "head"},
                f"the head classifies the features of an earlier stage (cut {cut} probes best), backbone frozen")
    if small:
        return ({**fixed, "trainable": "all", "warmup_epochs": 1},
                f"after one head-only epoch the whole model fine-tunes at {FINE_TUNE_LR}x the learning rate")
    if similar:
        return ({**fixed, "trainable": "all", "warmup_epochs": 1, "unfreeze_every": 1},
                f"the head trains for an epoch, then the stages unfreeze one per epoch from the top at "
                f"{FINE_TUNE_LR}x the learning rate")
    return ({**fixed, "cut": 0, "trainable": "all", "fine_tune_lr": 1.0},
            "the whole model trains at the full learning rate, from the backbone's weights")


def _probe(spec: Backbone, data: Dataset, seed: int) -> list[float]:
    """Validation accuracy of a logistic regression on the pooled features at each top stage end."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from automl.blocks.backbone import pooled_features

    keras.utils.set_random_seed(seed)  # the untrained network's weights
    model = pooled_features(spec.model_copy(update={"cut": 0}), data.input_shape, data.pixel_scale, PROBE_STAGES)
    train = _as_list(model.predict(data.x_train, batch_size=128, verbose=0))
    val = _as_list(model.predict(data.x_val, batch_size=128, verbose=0))
    keras.backend.clear_session()
    scores = []
    for x_train, x_val in zip(train, val, strict=True):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        probe.fit(x_train, data.y_train)
        scores.append(float(np.mean(probe.predict(x_val) == data.y_val)))
    return scores


def _as_list(outputs) -> list[np.ndarray]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
