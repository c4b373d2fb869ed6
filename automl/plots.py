"""The figures automl draws (matplotlib, no display): learning curves and LR range tests."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curves(history: dict[str, list[float]], title: str = ""):
    """Loss and accuracy per epoch, training beside validation. Drawn once per trial, so with
    fixed margins: measuring the layout (tight_layout, bbox_inches="tight") took 0.3 s a trial."""
    fig = Figure(figsize=(9, 3.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.22)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key in (metric, f"val_{metric}"):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {metric}".strip())
        ax.legend()
    return fig


def lr_range(curves: dict[str, dict]):
    """Smoothed loss against the learning rate, one curve per optimizer, its chosen band shaded."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        (line,) = ax.plot(curve["lr"], curve["loss"], label=f"{name} (suggested {curve['suggested']:.2g})")
        ax.axvspan(*curve["band"], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.legend()
    fig.tight_layout()
    return fig


def save(fig, path: str | Path, dpi: int = 80, tight: bool = True) -> Path:
    """``tight``: fit the saved area to what is drawn (legends and labels outside the axes);
    figures with fixed margins skip that measuring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
