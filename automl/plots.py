"""The figures automl draws (matplotlib, no display): learning curves and LR range tests."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curves(history: dict[str, list[float]], title: str = ""):
    """Loss and accuracy per epoch, training beside validation."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key in (metric, f"val_{metric}"):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {metric}".strip())
        ax.legend()
    fig.tight_layout()
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


def save(fig, path: str | Path, dpi: int = 80) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")  # keeps legends and labels placed outside the axes
    plt.close(fig)
    return path
