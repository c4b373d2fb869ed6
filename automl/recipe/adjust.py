"""How the recipe changes the space between stages: narrow the LR to the range test's band, read
the learning curves of the best coarse trials, then narrow around them and widen what the
diagnosis asks for. Every change comes back with a sentence saying what and why.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from automl.space import DefaultSuggester, SearchSpace
from automl.space.params import Param, label

LR = "training.optimizer.learning_rate"

# Overfitting: regularizers to allow more of, as (parameter, new spec when the space fixes or
# omits it, how to widen it when it is searched). Label-free ones only: flips or rotations can
# change what an image means (a 6 is not a flipped 9).
OVERFIT_KNOBS = (
    ("model.head.dropout", {"float": [0.0, 0.5], "default": 0.0}, lambda lo, hi: (lo, min(0.7, hi + 0.2))),
    ("regularization.l2", {"float": [1.0e-6, 1.0e-3], "log": True, "default": 1.0e-6},
     lambda lo, hi: (lo, min(1e-2, hi * 10))),
    ("augmentation.mixup", {"float": [0.0, 0.3], "default": 0.0}, lambda lo, hi: (lo, min(0.8, hi + 0.2))),
)
# Underfitting: train and val curves together below this training accuracy (under dropout and
# augmentation, so a little below what the model fits).
POOR_ACCURACY = 0.95
STILL_LEARNING = 0.1  # train loss falling by more than this per epoch
# Underfitting: width and depth parameters whose upper end grows (names end with these).
WIDTHS, DEPTHS = ("filters", "growth_rate", "width"), ("blocks", "convs", "modules")


def diagnose_curves(history: dict[str, list[float]], planned: int | None = None) -> tuple[str, str]:
    """overfit | underfit | undertrained | healthy, with the evidence, from one trial's per-epoch
    curves. Undertrained is underfit while the train loss still falls fast, or in a trial that
    ran fewer than the ``planned`` epochs of its configuration (a coarse trial's few): it asks
    for longer training, not a bigger model. (A schedule that decays within the short trial
    flattens its last epochs, so the slope alone would misread it as underfit.)"""
    loss, val_loss = history.get("loss", []), history.get("val_loss", [])
    acc, val_acc = history.get("accuracy", []), history.get("val_accuracy", [])
    if len(loss) < 2 or len(val_loss) < 2:
        return "healthy", "too few epochs to read a trend"
    gaps = [a - v for a, v in zip(acc, val_acc, strict=False)]
    best_val = min(range(len(val_loss)), key=val_loss.__getitem__)
    rising = best_val < len(val_loss) - 1 and val_loss[-1] > 1.1 * val_loss[best_val] and loss[-1] < loss[best_val]
    widening = len(gaps) >= 2 and gaps[-1] >= 0.03 and gaps[-1] > gaps[0] + 0.01
    if rising or widening:
        return "overfit", (f"train/val accuracy gap grew from {gaps[0]:+.3f} to {gaps[-1]:+.3f}" if widening else
                           f"val loss rose from {val_loss[best_val]:.3g} (epoch {best_val + 1}) to {val_loss[-1]:.3g} "
                           f"while train loss kept falling")
    falling = (loss[-2] - loss[-1]) / max(loss[-2], 1e-12)
    trend = f", train loss still falling {falling:.0%} per epoch" if falling > STILL_LEARNING else ""
    if abs(gaps[-1]) < 0.03 and acc[-1] < POOR_ACCURACY:
        short = f", after {len(loss)} of the {planned} epochs its configuration plans" if planned and \
            len(loss) < planned else ""
        if falling > STILL_LEARNING or short:  # cut short, not too small: more epochs, not a bigger model
            return "undertrained", (f"train and val curves coincide (gap {gaps[-1]:+.3f}) at train accuracy "
                                    f"{acc[-1]:.3f}{trend}{short}")
        return "underfit", f"train and val curves coincide (gap {gaps[-1]:+.3f}) at train accuracy {acc[-1]:.3f}"
    return "healthy", f"gap {gaps[-1]:+.3f} at train accuracy {acc[-1]:.3f}{trend}"


def overall_verdict(verdicts: list[str]) -> str:
    """The majority of the top trials' verdicts; on a tie, the best trial's."""
    counts = Counter(verdicts).most_common()
    tied = [v for v, n in counts if n == counts[0][1]]
    return verdicts[0] if len(tied) > 1 else counts[0][0]


def narrow_lr(space: SearchSpace, band: tuple[float, float], suggested: float) -> tuple[dict, list[str]]:
    """The change that searches the LR over ``band`` (within the space's own range when it has one)."""
    low, high = band
    param = _params(space).get(LR)
    if param is not None and param.kind == "float":
        space_low, space_high = param.spec.range
        if low < space_high and high > space_low:  # overlapping: stay inside what the user allowed
            low, high = max(low, space_low), min(high, space_high)
    default = min(max(suggested, low), high)
    node = param.node(range=[low, high], default=default, log=True) if param else \
        {"float": [low, high], "log": True, "default": default}
    return {LR: node}, [f"learning rate: searched over [{low:.2g}, {high:.2g}] (log), default {default:.2g}"]


def refine_changes(space: SearchSpace, top: list[dict[str, Any]], verdict: str) -> tuple[dict, dict, list[str]]:
    """Narrowing of each parameter around the top configurations (best first), and widening of
    what the verdict asks for: regularization against overfitting, width and depth against
    underfitting. Returned apart (narrowed, widened, notes), so a widening that does not build
    can be left out."""
    widened, widen_notes = _widen(space, verdict)
    narrowed, notes = {}, []
    for param in space.params:
        values = [t[param.name] for t in top if param.name in t]
        if param.name in widened or not values:
            continue
        node, note = _narrow(param, values)
        if node is not None:
            narrowed[param.name] = node
            notes.append(note)
    return narrowed, widened, notes + widen_notes


def start_from(space: SearchSpace, prefix: str, values: dict[str, Any]) -> tuple[dict, list[str]]:
    """Changes that make ``values`` (fields under ``prefix``) the space's defaults, so the first
    trial of a search tries them and the sampler explores around them (see ``defaults_to``)."""
    return defaults_to(space, {f"{prefix}.{key}": value for key, value in values.items()})


def defaults_to(space: SearchSpace, values: dict[str, Any]) -> tuple[dict, list[str]]:
    """Changes that make ``values`` (configuration path -> value) the space's defaults. A searched
    parameter that cannot take a value keeps its own default; one the space fixes keeps its value
    (the user's decision wins); one it leaves out is set."""
    params, written = _params(space), space.default()
    changes, notes = {}, []
    for name, value in values.items():
        param = params.get(name)
        current = _lookup(written, name)
        if param is not None and param.contains(value):
            changes[name] = param.node(default=value)
            notes.append(f"{name}: searched, starting from {value}")
        elif param is not None:
            notes.append(f"{name}: the space does not allow {value}; its own default stays")
        elif current is None:
            changes[name] = value
            notes.append(f"{name}: {value}")
        elif label(current) != label(value):
            notes.append(f"{name}: the space fixes {current} (the policy would start from {value})")
    return changes, notes


def larger_model(space: SearchSpace) -> dict[str, Any]:
    """The default configuration's width and depth parameters grown within the space: widths
    doubled, depths one more, or the next larger choice; {} when the space allows nothing larger."""
    defaults, grown = space.suggest_all(DefaultSuggester()), {}
    for param in space.params:
        last = param.name.rsplit(".", 1)[-1]
        value = defaults.get(param.name)
        if last not in WIDTHS + DEPTHS or isinstance(value, bool) or not isinstance(value, int):
            continue
        if param.kind == "int":
            want = value * 2 if last in WIDTHS else value + 1
            step, (low, high) = param.spec.step or 1, param.spec.range
            bigger = min(high, low + step * ((want - low) // step))
        elif param.kind == "choice":
            bigger = min((c for c in param.spec.choices if isinstance(c, int) and not isinstance(c, bool)
                          and c > value), default=value)
        else:
            continue
        if bigger > value:
            grown[param.name] = bigger
    return grown


def _lookup(config: dict, name: str) -> Any:
    for part in name.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _params(space: SearchSpace) -> dict[str, Param]:
    return {p.name: p for p in space.params}


def _narrow(param: Param, values: list[Any]) -> tuple[dict | None, str]:
    best = values[0]
    if param.kind == "choice":
        seen = {label(v) for v in values}
        kept = [c for c in param.spec.choices if label(c) in seen]
        if len(kept) == len(param.spec.choices):
            return None, ""
        return param.node(choices=kept, default=best), f"{param.name}: kept {kept} of {param.spec.choices}"
    lo, hi = min(values), max(values)
    space_lo, space_hi = param.spec.range
    if param.spec.log:
        lo, hi = lo / 2, hi * 2
    else:
        margin = 0.2 * (space_hi - space_lo)
        lo, hi = lo - margin, hi + margin
    if param.kind == "int":
        step = param.spec.step
        lo = space_lo + step * math.floor((lo - space_lo) / step)
        hi = space_lo + step * math.ceil((hi - space_lo) / step)
    elif param.spec.step is not None:
        return None, ""
    lo, hi = max(lo, space_lo), min(hi, space_hi)
    if (lo, hi) == (space_lo, space_hi):
        return None, ""
    return param.node(range=[lo, hi], default=best), f"{param.name}: [{lo:.3g}, {hi:.3g}] around the best trials"


def _widen(space: SearchSpace, verdict: str) -> tuple[dict, list[str]]:
    params = _params(space)
    changes, notes = {}, []
    if verdict == "overfit":
        for name, new, widen in OVERFIT_KNOBS:
            param = params.get(name)
            if param is None:
                current = _lookup(space.default(), name)
                low, high = new["float"]
                if isinstance(current, (int, float)) and low <= current:  # keep the space's value reachable
                    new = {**new, "float": [low, max(high, current)], "default": current}
                changes[name] = new
                notes.append(f"{name}: now searched over {new['float']} against overfitting")
            elif param.kind == "float":
                lo, hi = widen(*param.spec.range)
                if hi > param.spec.range[1]:
                    changes[name] = param.node(range=[lo, hi])
                    notes.append(f"{name}: upper end raised to {hi:.3g} against overfitting")
    elif verdict == "underfit":
        for param in space.params:
            last = param.name.rsplit(".", 1)[-1]
            if last not in WIDTHS + DEPTHS:
                continue
            grow = (lambda v: v * 2) if last in WIDTHS else (lambda v: v + 1)
            if param.kind == "int":
                hi = grow(param.spec.range[1])
                changes[param.name] = param.node(range=[param.spec.range[0], hi])
            elif param.kind == "choice" and all(isinstance(c, int) and not isinstance(c, bool)
                                                 for c in param.spec.choices):
                hi = grow(max(param.spec.choices))
                changes[param.name] = param.node(choices=[*param.spec.choices, hi])
            else:
                continue
            notes.append(f"{param.name}: up to {hi} against underfitting")
    return changes, notes
