"""The tune's wall-clock budget, shared out across the stages with carry-over.

Each stage gets its share of what is left when it starts, so a stage that finishes early
gives its time to the later ones, and one that overruns takes it from them.
"""

from __future__ import annotations

import time

STAGES = ("sanity", "overfit", "lr_range", "coarse", "diagnose", "refine", "final")

# The checks are fixed, small amounts of work; their shares only say what they usually take.
SHARES = {"sanity": 0.02, "overfit": 0.04, "lr_range": 0.07, "coarse": 0.36, "diagnose": 0.01, "refine": 0.30,
          "final": 0.20}


class Budget:
    def __init__(self, total: float, spent_before: float = 0.0):
        """``spent_before``: seconds that finished stages of an interrupted tune already used."""
        self.total, self.spent_before = total, spent_before
        self.start = time.perf_counter()

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def remaining(self) -> float:
        return max(0.0, self.total - self.spent())

    def allot(self, stage: str) -> float:
        """The seconds ``stage`` may take: its share of what the stages from it onward have left."""
        later = STAGES[STAGES.index(stage):]
        return self.remaining() * SHARES[stage] / sum(SHARES[s] for s in later)
