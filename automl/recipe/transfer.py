"""Where a tune with a backbone starts: the transfer-learning table every course teaches, with
the data set's size and its similarity to the backbone's data measured rather than guessed,
and its small-data row changed by what this project measured.

==========  ===================================  =========================================
data        similar to the backbone's            different
==========  ===================================  =========================================
small       train the whole model at the full LR, from the backbone's weights
large       warm the head up, then unfreeze      train the whole model at the full LR,
            from the top with a small LR         from the backbone's weights
==========  ===================================  =========================================

The courses' small-data advice (freeze the backbone and train a head; for different data,
classify an earlier stage's frozen features or fine-tune everything at a tenth of the LR) lost
wherever it was measured, on Fashion-MNIST's classes 5-9 with a backbone trained on 0-4
(``benchmarks/transfer.py``): 120 s tunes started there on 30 images per class scored 0.801
(similar, frozen) and 0.635 (different) against 0.864 and 0.899 from scratch, and a 300 s one
on 200 per class 0.9438 against 0.9484. Trained directly on 30 per class, the whole network at
the full LR from the trained weights scored 0.906 where scratch scored 0.879 and the frozen
backbone 0.79 (``docs/transfer.md``). Freezing saves compute, little for the small networks
trained here, and its head learns slowly on unnormalized features; the searches still explore
``trainable`` from the starting point.

Size: training images per class, against ``SMALL_PER_CLASS``. Similarity: a linear probe
(logistic regression) on the backbone's pooled features at the ends of its top stages, against
the same probe on the same architecture with random weights. Random convolutional features
are a fair baseline, far above chance; the trained ones are *similar* data's features when
they make at most ``SIMILAR`` times the random ones' errors.

Before the table, one question: do the trained features help at all? The best cut's trained
probe against the untrained one's, image by image (out of fold), with the standard error of
their paired difference:

- ahead by more than the error: the table above;
- within it (*unhelpful*): frozen features would be no better than random ones, so the
  different column's policy;
- behind by more than the error (*harmful*): the whole network trains from scratch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from automl.config import Backbone
from automl.data import Dataset, subsample

SMALL_PER_CLASS = 1000  # fewer training images per class is "small" (ImageNet has about 1,300)
SIMILAR = 2 / 3  # at most this share of the random features' probe errors
PROBE_TRAIN, PROBE_VAL = 2000, 1000  # images probed (pooled: each is scored by a fit that did not see it)
PROBE_FOLDS = 5
PROBE_STAGES = 3  # the top stage ends probed: cut 0, 1, 2
FINE_TUNE_LR = 0.1  # the usual advice: about a tenth of the learning rate that trains the head


@dataclass
class Reading:
    """What the tune measured and the policy it starts from."""

    per_class: float
    small: bool
    probes: list[dict]  # per cut: pretrained and random probe accuracies
    cut: int  # the cut whose pretrained features probe best
    gain: float  # their probe's accuracy less the untrained network's, at that cut (paired)
    gain_error: float  # its standard error
    helps: bool  # whether the gain exceeds its standard error
    harms: bool  # whether the loss (minus the gain) does
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
    probes = [{"cut": cut, "pretrained": float(p.mean()), "random": float(r.mean())}
              for cut, (p, r) in enumerate(zip(pretrained, untrained, strict=True))]
    best = max(probes, key=lambda p: p["pretrained"])  # the first (highest) stage of equals
    gain = pretrained[best["cut"]].astype(float) - untrained[best["cut"]]
    error = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    helps, harms = float(gain.mean()) > error, float(gain.mean()) < -error
    similar = helps and 1 - best["pretrained"] <= SIMILAR * (1 - best["random"])
    likeness = "similar" if similar else "different" if helps else "harmful" if harms else "unhelpful"
    cell = f"{'small' if small else 'large'} and {likeness}"
    policy, action = _policy(small, similar, best["cut"]) if helps else _whole_network(from_scratch=harms)
    size = (f"{per_class:.0f} training images per class ({'<' if small else '>='} {SMALL_PER_CLASS}: "
            f"{'small' if small else 'large'})")
    measured = (f"a linear probe on the backbone's features at cut {best['cut']} scores {best['pretrained']:.3f}, "
                f"against {best['random']:.3f} for the same network untrained ({gain.mean():+.3f} ± {error:.3f} "
                f"over {len(gain)} images")
    if harms:
        reason = "behind by more than its standard error: the trained features hinder"
    elif not helps:
        reason = "not ahead by more than its standard error: frozen, they would not help"
    else:
        reason = (f"errors {'at most' if similar else 'more than'} {SIMILAR:.2f}x the untrained's: "
                  f"{'similar' if similar else 'different'}")
    return Reading(per_class, small, probes, best["cut"], float(gain.mean()), error, helps, harms, similar, cell,
                   policy, f"{size}; {measured}; {reason}). Cell: {cell}, so {action}.")


def _whole_network(from_scratch: bool) -> tuple[dict, str]:
    """Small data, or features unlike the data's: nothing frozen, the full LR."""
    whole = {"cut": 0, "trainable": "all", "fine_tune_lr": 1.0, "warmup_epochs": 0, "unfreeze_every": 0}
    if from_scratch:
        return ({"weights": "random", **whole},
                "the whole network trains from scratch (random weights) at the full learning rate")
    return whole, "the whole network trains at the full learning rate, from the trained weights"


def _policy(small: bool, similar: bool, cut: int) -> tuple[dict, str]:
    if small or not similar:
        return _whole_network(from_scratch=False)
    return ({"cut": cut, "trainable": "all", "warmup_epochs": 1, "unfreeze_every": 1, "fine_tune_lr": FINE_TUNE_LR},
            f"the head trains for an epoch, then the stages unfreeze one per epoch from the top at "
            f"{FINE_TUNE_LR}x the learning rate")


def _probe(spec: Backbone, data: Dataset, seed: int) -> list[np.ndarray]:
    """Per top stage end, which images a logistic regression on the pooled features classifies
    right, each by a fit on the other folds of the training and validation images pooled."""
    import keras
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from automl.blocks.backbone import pooled_features

    keras.utils.set_random_seed(seed)  # the untrained network's weights
    model = pooled_features(spec.model_copy(update={"cut": 0}), data.input_shape, data.pixel_scale, PROBE_STAGES)
    x, y = np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])
    features = _as_list(model.predict(x, batch_size=128, verbose=0))
    keras.backend.clear_session()
    fewest = np.unique(y, return_counts=True)[1].min()  # few-shot data: folds no more than a class has images
    folds = StratifiedKFold(max(2, min(PROBE_FOLDS, fewest)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class of one image, a probe short of convergence: still a reading
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), f, y,
                                  cv=folds) == y for f in features]


def _as_list(outputs) -> list[np.ndarray]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
