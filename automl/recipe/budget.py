"""The tune's wall-clock budget, shared out across the stages with carry-over.

Each stage gets its share of what is left when it starts, so a stage that finishes early
gives its time to the later ones, and one that overruns takes it from them.

Where a full pass over the data is dear for the budget (Fashion-MNIST's 51,000 images on two
CPU cores), the budget is planned from the training speed the LR sweeps measured, and planned
again from the speed the coarse search's best trial trained at (a sweep times the bare
training step: 2,730 images/s on Fashion-MNIST, where the best trial's epochs ran 2,390): the
final training gets a larger share, enough for the epochs the space's configuration names as far
as the searches keep what they cannot do without, and the searches rank their trials on
stratified subsets sized so that each can afford its trials. The margins for a host whose speed
varies come from how steadily it ran the sweeps and the searches' epochs (``steadiness``), not
from a constant.

The stages' usual shares are weights: each stage's seconds are its weight's part of what is
left to it and the stages after it, so they need not sum to 1 (transfer runs only for a space
with a trained backbone).
"""

from __future__ import annotations

import math
import statistics
import time

PLANNED = ("coarse", "diagnose", "refine", "final")  # the kinds of stage the plan re-shares
MIN_FINAL_EPOCHS = 8  # fewer, and a cheaper configuration that affords them is the better final model
MORE_ERRORS = 1.25  # ... if it makes at most this many times the errors of the best of its search
# How steady a host that measured nothing runs (``steadiness``): as unsteady as it is allowed to be.
LEAST_STEADY = 0.5
# Trials a search stage should afford: enough for TPE to learn (coarse), and the seeds plus a
# few more (refine).
TRIALS = {"coarse": 12, "refine": 5}
MIN_TRAIN, MIN_VAL = 2000, 2000  # below these, rankings are noise
EVAL_COST = 1 / 3  # a validation image costs about a third of a training image (no backward pass)


def steadiness(durations) -> float:
    """How steadily the host ran pieces of equal work (``durations``, in seconds): the median
    piece's time over the 90th percentile's. 1.0 on a quiet host; 0.7 where one piece in ten
    took 40% longer than usual. A speed measured for a few seconds reads that much slow, and an
    epoch foreseen at the usual speed takes that much longer, so the budget plans with it: the
    final's epochs are foreseen in this share of its seconds (``speed_floor`` says how the two
    meet in the searches' pruning). Never below ``LEAST_STEADY``, which is also the answer with
    fewer than four pieces."""
    times = sorted(d for d in durations if d > 0 and math.isfinite(d))
    if len(times) < 4:
        return LEAST_STEADY
    slow = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    return max(LEAST_STEADY, min(1.0, statistics.median(times) / slow))


class Budget:
    def __init__(self, total: float, usual: dict[str, float], spent_before: float = 0.0,
                 planned: dict[str, float] | None = None):
        """``usual``: each kind of stage's share, the stages' own; ``planned``: the plan's, once
        made from measurements (``planned_shares``); ``spent_before``: seconds the finished stages
        of an interrupted tune already used."""
        self.total, self.spent_before = total, spent_before
        self.usual = dict(usual)
        self.shares = dict(planned or usual)
        self.start = time.perf_counter()

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def remaining(self) -> float:
        return max(0.0, self.total - self.spent())

    def allot(self, kind: str, later: list[str]) -> float:
        """The seconds a stage of ``kind`` may take: its share of what it and the ``later`` stages
        (their kinds) have left."""
        return self.remaining() * self.shares[kind] / (self.shares[kind] + sum(self.shares[k] for k in later))

    def final_after(self, seconds: float, between: list[str]) -> float:
        """The final stage's seconds, foreseen, if the stage now starting takes ``seconds`` and the
        stages ``between`` it and the final take their shares."""
        rest = self.shares["final"] + sum(self.shares[k] for k in between)
        return max(0.0, self.remaining() - seconds) * self.shares["final"] / rest


def planned_shares(usual: dict[str, float], images_per_second: float, final_images: int, remaining: float,
                   final_epochs: int, search_seconds: float, left: tuple[str, ...] = PLANNED) -> dict[str, float]:
    """``usual`` shares re-shared among the planned kinds ``left`` to run so that the final
    training gets time for ``final_epochs`` epochs over ``final_images`` at ``images_per_second``,
    as far as that leaves the searches the ``search_seconds`` they cannot do without
    (``least_search_seconds``); never less than its usual share of ``remaining``."""
    planned = sum(usual[s] for s in left)
    wanted = final_epochs * final_images / images_per_second / max(remaining, 1.0)
    most = 1 - search_seconds / max(remaining, 1.0)
    final = max(usual["final"] / planned, min(most, wanted))
    searches = planned - usual["final"]
    return {**usual, **{s: usual[s] * (1 - final) * planned / searches for s in left if s != "final"},
            "final": final * planned}


def least_search_seconds(images_per_second: float, epochs: int, train: int, val: int,
                         searches: tuple[str, ...] = ("coarse", "refine")) -> float:
    """What the ``searches`` cannot do without: each its ``TRIALS`` of ``epochs`` epochs on the
    smallest subsets whose rankings are not noise (``MIN_TRAIN``, ``MIN_VAL``, or all there is)."""
    per_epoch = (min(train, MIN_TRAIN) + EVAL_COST * min(val, MIN_VAL)) / images_per_second
    return sum(TRIALS[s] for s in searches) * epochs * per_epoch


def speed_floor(default_speed: float, final_seconds: float, final_images: int, steady: float) -> float:
    """The images per second below which a search prunes a trial: the speed at which a final
    training of ``final_seconds`` affords ``MIN_FINAL_EPOCHS`` epochs over ``final_images``, or
    ``steady`` times the default configuration's speed where even that falls short (the first
    trial must pass). On a host of ``steady`` steadiness (``steadiness``) a trial's first seconds
    may read that much slow, and the final's epochs take that much longer: the two cancel."""
    return min(MIN_FINAL_EPOCHS * final_images / max(final_seconds, 1.0), steady * default_speed)


def subset_sizes(images_per_second: float, seconds: float, epochs: int, trials: int, train: int,
                 val: int) -> tuple[int, int]:
    """Training and validation images per trial such that ``trials`` trials of ``epochs`` epochs
    fit in ``seconds``; the whole splits where they fit, never less than MIN_TRAIN / MIN_VAL."""
    per_image = epochs / images_per_second  # seconds a training image costs a trial
    affordable = seconds / trials / (per_image * (1 + EVAL_COST * val / train))
    if affordable >= train:
        return train, val
    n_train = min(train, max(MIN_TRAIN, int(affordable)))
    return n_train, min(val, max(MIN_VAL, round(val * n_train / train)))


def affordable_epochs(images_per_second: float, seconds: float, trials: int, train: int, val: int) -> int:
    """Epochs per trial over ``train`` and ``val`` images such that ``trials`` trials fit in ``seconds``."""
    per_epoch = (train + EVAL_COST * val) / images_per_second
    return int(seconds / trials / per_epoch) if per_epoch > 0 else 10**6
