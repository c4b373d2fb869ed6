"""Search quality over seeds, budgets and data cases: the matrix behind the tune's claim.

    .venv/bin/python benchmarks/search_matrix.py --tier quick    # about 1.5 h on 2 cores
    .venv/bin/python benchmarks/search_matrix.py --tier full     # about a day
        [--seeds 0,1,2] [--contenders tune,tpe,baseline] [--cases digits@300,fashion_small@300]
        [--workdir DIR]   # keep each cell's files: the tunes' reports, the studies

Each cell (data case, budget, seed) runs the contenders of ``benchmarks/search_quality.py`` one
after the other, on the same split; the seed sets the split, the draw of a small case and the
search. Every finished run is appended to benchmarks/results/search_matrix.jsonl with the commit
it measured, so an interrupted matrix resumes where it stopped and a rerun of the same commit adds
only what is missing. The report (its section of RESULTS.md, search_matrix.png) reads the latest
run of each cell: per data case and budget, each contender's mean test accuracy with its standard
error over seeds, and the paired difference tune - contender over the seeds both finished, marked
where the tune is ahead by more than that difference's standard error.

Data cases: ``digits`` (bundled with scikit-learn), ``fashion_mnist`` (Debian's
dataset-fashion-mnist) and ``fashion_small``: 3,000 training images drawn per seed from
Fashion-MNIST's training split, tested on 5,000 drawn from its test split, a small-data case
none of the tune's constants was set on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS,
    ROOT,
    ensure_data,
    head_commit,
    machine,
    markdown_table,
    mean_se,
    provenance,
    update_results_md,
)
from search_quality import NAMES, RUNNERS, write_split  # noqa: E402

TIERS = {
    "quick": {"cases": [("digits", 300), ("fashion_small", 300)], "seeds": [0, 1, 2],
              "contenders": ["tune", "tpe", "baseline"]},
    "full": {"cases": [("digits", 120), ("digits", 300), ("fashion_small", 300), ("fashion_small", 900),
                       ("fashion_mnist", 300), ("fashion_mnist", 900), ("fashion_mnist", 1800)],
             "seeds": [0, 1, 2], "contenders": list(RUNNERS)},
}
SMALL_TRAIN, SMALL_TEST = 3_000, 5_000
LOG = RESULTS / "search_matrix.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="quick")
    parser.add_argument("--cases", help="data@budget,... instead of the tier's")
    parser.add_argument("--seeds", help="comma-separated, instead of the tier's")
    parser.add_argument("--contenders", help="comma-separated, instead of the tier's")
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "small_images.yaml"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the runs on record")
    parser.add_argument("--workdir", help="keep each cell's contenders' files (reports, studies) here")
    args = parser.parse_args()
    tier = TIERS[args.tier]
    try:
        cases = [(c.split("@")[0], float(c.split("@")[1])) for c in args.cases.split(",")] if args.cases \
            else tier["cases"]
    except (IndexError, ValueError):
        parser.error(f"--cases {args.cases}: give data@seconds, comma-separated (digits@300,fashion_small@300)")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else tier["seeds"]
    contenders = args.contenders.split(",") if args.contenders else tier["contenders"]
    unknown = set(contenders) - set(RUNNERS)
    if unknown:
        parser.error(f"--contenders: unknown {', '.join(sorted(unknown))}; choose from {', '.join(RUNNERS)}")
    commit = head_commit()
    if args.report_only:  # the runs on record: the latest commit that ran any
        commit = next((r["commit"] for r in reversed(_runs())), commit)
    else:
        done = {_key(r) for r in _runs() if r["commit"] == commit and not r.get("error")}  # failed: run again
        for data, budget in cases:
            ensure_data("fashion_mnist" if data.startswith("fashion") else data)
            for seed in seeds:
                todo = [c for c in contenders if (data, float(budget), seed, c) not in done]
                if todo:
                    _cell(data, float(budget), seed, todo, args.space, commit, args.workdir)
    report(cases, contenders, commit, machine())


def _cell(data: str, budget: float, seed: int, contenders: list[str], space: str, commit: str,
          keep: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep) / f"{data}-{budget:.0f}-seed{seed}" if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = str(_small_draw(seed, work / "small.npz")) if data == "fashion_small" else data
        split = write_split(source, seed, work / "split.npz")  # automl's split, for the other contenders
        settings = SimpleNamespace(data=source, budget=budget, seed=seed, space=space)
        for name in contenders:
            folder = work / name
            shutil.rmtree(folder, ignore_errors=True)  # a failed run's files, kept by --workdir
            folder.mkdir()
            print(f"\n=== {data}, {budget:.0f} s, seed {seed}: {NAMES[name]} ===", flush=True)
            result = RUNNERS[name](folder, settings, split)
            run = {"data": data, "budget": budget, "seed": seed, "contender": name, "commit": commit,
                   **{k: result[k] for k in ("test_accuracy", "single_test_accuracy", "trials", "epochs",
                                             "wall_seconds", "error") if k in result}}
            print(json.dumps(run), flush=True)
            LOG.parent.mkdir(parents=True, exist_ok=True)
            with LOG.open("a") as log:
                log.write(json.dumps(run) + "\n")


def _small_draw(seed: int, path: Path) -> Path:
    """fashion_small for ``seed``: a draw of Fashion-MNIST's images, as uint8 pixels; its training
    images are split into train and validation as any .npz without a validation split is."""
    from automl.data import load_dataset

    full = load_dataset("fashion_mnist", seed=seed)
    rng = np.random.default_rng(seed)
    train = rng.choice(len(full.x_train), SMALL_TRAIN, replace=False)
    test = rng.choice(len(full.x_test), SMALL_TEST, replace=False)

    def pixels(x):
        return np.round(x * full.pixel_scale * 255).astype("uint8")

    np.savez(path, x_train=pixels(full.x_train[train]), y_train=full.y_train[train], x_test=pixels(full.x_test[test]),
             y_test=full.y_test[test])
    return path


def _runs() -> list[dict]:
    return [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()] if LOG.exists() else []


def _key(run: dict) -> tuple:
    return run["data"], float(run["budget"]), run["seed"], run["contender"]


def report(cases: list[tuple[str, float]], contenders: list[str], commit: str, info: dict) -> None:
    """The matrix of the latest run of each cell of ``commit``."""
    latest = {_key(r): r for r in _runs() if r["commit"] == commit}
    accuracy = {k: r["test_accuracy"] for k, r in latest.items() if r.get("test_accuracy") is not None}
    rows, points = [], {}
    for data, budget in cases:
        tune = {k[2]: a for k, a in accuracy.items() if k[:2] == (data, float(budget)) and k[3] == "tune"}
        for name in contenders:
            mine = {k[2]: a for k, a in accuracy.items() if k[:2] == (data, float(budget)) and k[3] == name}
            if not mine:
                continue
            mean, se = mean_se(list(mine.values()))
            points.setdefault((data, name), []).append((budget, mean, se))
            row = {"data": data, "budget s": f"{budget:.0f}", "contender": NAMES[name], "seeds": len(mine),
                   "test accuracy": f"{mean:.4f} ± {se:.4f}"}
            both = sorted(set(tune) & set(mine))
            if name != "tune" and both:
                diff, diff_se = mean_se([tune[s] - mine[s] for s in both])
                ahead = "ahead" if diff > diff_se else "not ahead"
                row["tune - contender (paired)"] = f"{diff:+.4f} ± {diff_se:.4f} ({ahead})"
            rows.append(row)
    table = markdown_table(rows, ["data", "budget s", "contender", "seeds", "test accuracy",
                                  "tune - contender (paired)"])
    views = _views_table(cases, latest)
    print("\n" + table + "\n\n" + views)
    _plot(points)
    title = "Search quality over seeds, budgets and data cases (`benchmarks/search_matrix.py`)"
    update_results_md("search_matrix", f"""## {title}

Each contender's mean test accuracy ± its standard error over seeds (the seed sets the split, a
small case's draw and the search), and the paired difference tune − contender over the seeds both
finished: "ahead" where it exceeds its standard error. Runs of commit `{commit}`; the automl
contenders search `small_images.yaml`. `fashion_small`: {SMALL_TRAIN:,} training images drawn per seed
from Fashion-MNIST, tested on {SMALL_TEST:,} of its test split.

{table}

What the tune's averaging brings: its final averages several models where its time affords
several times the configuration's epochs, and test-time views (mirrored, shifted images) where its
held-out part says they pay. "Averaged": the tunes whose final did either; the gain is the final's
test accuracy minus its first model's on the image as it is, over the seeds of each case.

{views}

![test accuracy against budget per contender](results/search_matrix.png)

{provenance(info)}
""")


def _views_table(cases: list[tuple[str, float]], latest: dict) -> str:
    rows = []
    for data, budget in cases:
        tunes = [r for k, r in latest.items() if k[:2] == (data, float(budget)) and k[3] == "tune"
                 and r.get("test_accuracy") is not None and "single_test_accuracy" in r]
        if tunes:
            single = [r["single_test_accuracy"] for r in tunes]
            mean, se = mean_se([r["test_accuracy"] - (s if s is not None else r["test_accuracy"])
                                 for r, s in zip(tunes, single, strict=True)])
            rows.append({"data": data, "budget s": f"{budget:.0f}", "seeds": len(tunes),
                         "averaged": sum(s is not None for s in single),
                         "test accuracy gain": f"{mean:+.4f} ± {se:.4f}"})
    return markdown_table(rows, ["data", "budget s", "seeds", "averaged", "test accuracy gain"])


def _plot(points: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({data for data, _ in points})
    if not cases:
        return
    figure, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
    for ax, data in zip(axes[0], cases, strict=True):
        mine = [(name, series) for (case, name), series in sorted(points.items()) if case == data]
        for i, (name, series) in enumerate(mine):
            budgets, means, errors = zip(*sorted(series), strict=True)
            dodged = [b * (1 + 0.015 * (i - len(mine) / 2)) for b in budgets]  # error bars side by side
            ax.errorbar(dodged, means, yerr=[0 if e != e else e for e in errors], marker="o", capsize=3,
                        label=NAMES[name])
        ax.set(title=data, xlabel="budget (s)", ylabel="test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    figure.savefig(RESULTS / "search_matrix.png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
