"""The live view of a search: a line per epoch and per trial, then a table of the best trials."""

from __future__ import annotations

import keras

from automl.training.progress import EpochPrinter


class Live:
    def __init__(self, target: int | None, objective: str, direction: str, enabled: bool = True):
        self.target, self.objective, self.direction, self.enabled = target, objective, direction, enabled
        self.best: tuple[float, int] | None = None

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def trial_started(self, number: int, finished: int, summary: str) -> None:
        target = f"/{self.target}" if self.target else ""
        self.say(f"trial {number} ({finished}{target} finished): {summary}")

    def trial_ended(self, number: int, state: str, value: float | None, seconds: float, reason: str = "") -> None:
        if value is not None and state == "COMPLETE":
            maximize = self.direction == "maximize"
            better = self.best is None or (value > self.best[0] if maximize else value < self.best[0])
            if better:
                self.best = (value, number)
        shown = f" {self.objective} {value:.4f}" if value is not None else ""
        best = f" | best {self.best[0]:.4f} (trial {self.best[1]})" if self.best else ""
        self.say(f"trial {number} {state}{shown}{' (' + reason + ')' if reason else ''} in {seconds:.1f} s{best}")

    def epoch_callbacks(self, number: int, epochs: int) -> list[keras.callbacks.Callback]:
        return [EpochPrinter(epochs, prefix=f"  trial {number} ")] if self.enabled else []
