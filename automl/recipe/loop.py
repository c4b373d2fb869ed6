"""Step 7 of the recipe: after a refine round, read the curves again and refine once more while
it still pays. A round pays when it beat the search before it by more than the noise of the
comparison (one standard error) and the loop's time still affords another round of useful size.

The loop's time is the refine share of the budget, fixed when the first round starts; each round
takes half of what is left of it while two rounds still fit, else all of it. Whatever the loop
does not use goes to the final training.
"""

from __future__ import annotations

import math
import statistics

MAX_ROUNDS = 5  # a bound for budgets so large that the noise rule alone would keep going


def noise(objective: str, value: float, val_images: int, history: dict[str, list[float]]) -> float:
    """One standard error of the best trial's ``objective``: binomial for an accuracy over
    ``val_images``; for a loss, how much it still wobbled over the trial's last three epochs."""
    if objective == "val_accuracy":
        return math.sqrt(max(value * (1 - value), 0.0) / max(val_images, 1))
    last = history.get(objective, [])[-3:]
    return statistics.stdev(last) if len(last) >= 2 else 0.0


def improvement(previous: float | None, best: float | None, maximize: bool) -> float:
    if previous is None or best is None:
        return math.nan
    return best - previous if maximize else previous - best


def another_round(gain: float, error: float, seconds_left: float, round_seconds: float, done: int,
                  max_rounds: int = MAX_ROUNDS) -> tuple[bool, str]:
    """Whether the loop runs another round after ``done`` rounds, and why (or why not):
    ``gain`` is the last round's improvement over the search before it and ``error`` its standard
    error; ``round_seconds`` what the smallest useful round takes and ``seconds_left`` what the
    loop has left."""
    if not gain > error:
        shown = "no gain" if math.isnan(gain) else f"a gain of {gain:+.4f}"
        return False, f"the last round brought {shown}, not more than its noise ({error:.4f})"
    if seconds_left < round_seconds:
        return False, (f"{seconds_left:.0f} s left to the loop, fewer than the {round_seconds:.0f} s a round of "
                       f"useful size takes")
    if done >= max_rounds:
        return False, f"{done} rounds, the most the loop runs"
    return True, (f"the last round gained {gain:+.4f}, more than its noise ({error:.4f}), and {seconds_left:.0f} s "
                  f"are left")


def round_seconds(left: float, smallest: float) -> float:
    """A round's seconds: half of what the loop has ``left`` while two rounds of ``smallest``
    seconds fit in it, else all of it."""
    return left / 2 if left >= 2 * smallest else left
