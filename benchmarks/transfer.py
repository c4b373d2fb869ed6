"""Transfer learning on little data: a backbone searched on Fashion-MNIST's classes 0-4, reused
for classes 5-9 with few training images, against the same architecture trained from scratch
with the same budget, over seeds.

    .venv/bin/python benchmarks/transfer.py [--source-budget 600] [--budget 300] [--train-images 1000]
        [--seeds 0 1 2] [--backbone FOLDER]

1. ``automl tune`` on classes 0-4 (all their training images) for ``--source-budget`` seconds;
   ``automl export`` writes its final model: the backbone (searched once, with seed 0).
2. Per seed, on classes 5-9: ``--train-images`` stratified training images (the seed draws
   them), a quarter as many validation images, and all their test images; two ``automl tune``
   runs of ``--budget`` seconds each:
   - *transferred*: the backbone's trained weights; the tune's transfer stage measures the data
     and picks its starting policy (from scratch where the trained features do not help), and
     its searches explore cut, freeze policy, fine-tuning LR, warm-up and progressive unfreezing;
   - *from scratch*: the same architecture (the backbone, uncut), untrained, all of it trained
     at the full learning rate.
   Both search the same head, learning rate and batch size.

Every run is appended to benchmarks/results/transfer.jsonl with its commit; the RESULTS.md
section shows each case (training images, budget) from its latest runs: the mean ± standard
error of both, and their paired difference. Run it on a quiet machine: each run has a
wall-clock budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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

AUTOML = [sys.executable, "-m", "automl.cli"]
LOG = RESULTS / "transfer.jsonl"
SOURCE_CLASSES, TARGET_CLASSES = range(0, 5), range(5, 10)
# What both target tunes search besides the backbone: the head and the training.
TRAINING = """
  head:
    dropout: {float: [0.0, 0.5], default: 0.3}
training:
  epochs: 15
  batch_size: {choice: [32, 64, 128], default: 64}
  optimizer:
    name: adam
    learning_rate: {float: [1.0e-4, 1.0e-2], log: true, default: 2.0e-3}
  schedule: {name: cosine}
"""
TRANSFERRED = """model:
  backbone:
    source: {source}
    cut: {{int: [0, 2], default: 0}}
    trainable: {{choice: [head, top, all], default: head}}
    trainable_stages: {{int: [1, 2], default: 1, when: {{trainable: top}}}}
    fine_tune_lr: {{float: [0.01, 1.0], log: true, default: 0.1}}
    warmup_epochs: {{int: [0, 3], default: 0}}
    unfreeze_every: {{int: [0, 3], default: 0}}
"""
SCRATCH = """model:
  backbone: {{source: {source}, weights: random, trainable: all, fine_tune_lr: 1.0}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-budget", type=float, default=600.0, help="seconds to search the backbone")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for each run on the target classes")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="+", choices=["transferred", "from scratch"],
                        default=["transferred", "from scratch"],
                        help="which to run (the report pairs each seed's latest of both)")
    parser.add_argument("--workdir", help="keep the runs' files here (default: a temporary folder)")
    parser.add_argument("--backbone", help="an `automl export` folder to reuse instead of searching one")
    args = parser.parse_args()
    info = machine()
    ensure_data("fashion_mnist")
    commit = head_commit()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.backbone:
            backbone = Path(args.backbone).resolve()
        else:
            backbone = work / "backbone"
            source_data, _ = write_data(work / "source", args.train_images, 0)
            tune(work / "source", source_data, ROOT / "search_spaces" / "small_images.yaml", args.source_budget, 0)
            automl(["export", "--study", "tune", "--out", str(backbone)], work / "source")
        for seed in args.seeds:
            folder = work / f"{args.train_images}-{seed}"
            _, target_data = write_data(folder, args.train_images, seed)
            for name, template in (("transferred", TRANSFERRED), ("from scratch", SCRATCH)):
                if name not in args.runs:
                    continue
                space = folder / f"{name.replace(' ', '_')}.yaml"
                space.write_text(template.format(source=backbone) + TRAINING)
                run = {"train_images": args.train_images, "budget": args.budget, "seed": seed, "run": name,
                       "commit": commit, **tune(folder / name.replace(" ", "_"), target_data, space, args.budget,
                                                seed)}
                LOG.parent.mkdir(parents=True, exist_ok=True)
                with LOG.open("a") as log:
                    log.write(json.dumps(run) + "\n")
    report(info)


def write_data(work: Path, train_images: int, seed: int) -> tuple[Path, Path]:
    """automl's split of Fashion-MNIST, cut by class: all of 0-4, and a small stratified part of 5-9."""
    from automl.data import load_dataset
    from automl.data.dataset import holdout

    d = load_dataset("fashion_mnist", seed=seed)

    def classes(x, y, wanted):
        keep = np.isin(y, list(wanted))
        return x[keep], y[keep] - min(wanted)

    def few(x, y, n):
        return holdout(x, y, n / len(y), seed)[1::2]

    parts = {"source": {}, "target": {}}
    for split, n in (("train", train_images), ("val", max(1, train_images // 4)), ("test", None)):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        parts["source"][f"x_{split}"], parts["source"][f"y_{split}"] = classes(x, y, SOURCE_CLASSES)
        x_t, y_t = classes(x, y, TARGET_CLASSES)
        parts["target"][f"x_{split}"], parts["target"][f"y_{split}"] = few(x_t, y_t, n) if n else (x_t, y_t)
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, arrays in parts.items():
        path = work / f"{name}.npz"
        np.savez(path, **arrays)
        print(f"{name}: {len(arrays['y_train'])} train / {len(arrays['y_val'])} val / {len(arrays['y_test'])} "
              "test images", flush=True)
        paths.append(path)
    return paths[0], paths[1]


def automl(command: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "output.log", "a") as log:
        subprocess.run([*AUTOML, *command], cwd=folder, check=True, stdout=log, stderr=subprocess.STDOUT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})


def tune(folder: Path, data: Path, space: Path, budget: float, seed: int) -> dict:
    """One ``automl tune``; its final model's test accuracy and what its transfer stage chose."""
    from automl.hpo import records
    from automl.hpo.records import TrialRecord
    from automl.hpo.storage import load_study

    print(f"\n=== tune {space.name} on {data.name}: {budget:.0f} s ===", flush=True)
    automl(["tune", "--space", str(space), "--data", str(data), "--budget", str(budget), "--study", "tune",
            "--seed", str(seed), "--quiet"], folder)
    study = load_study("tune", f"journal:{folder}/automl.journal")
    final = TrialRecord.of(study.trials[0])
    stages = records.stage_records(study)
    result = {"test_accuracy": final.metrics["test_accuracy"],
              "seconds": round(sum(r["seconds"] for r in stages.values()), 1),
              "final": stages["final"]["summary"]}
    if "transfer" in stages:
        result["transfer"] = {"cell": stages["transfer"]["verdict"], "why": stages["transfer"]["summary"],
                              "probes": stages["transfer"]["outputs"]["probes"]}
    result["config"] = final.config["model"].get("backbone")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)
    return result


def report(info: dict) -> None:
    """Each case (training images, budget) from the latest run of each of its seeds."""
    latest = {}
    for line in LOG.read_text().splitlines():
        run = json.loads(line)
        latest[run["train_images"], run["budget"], run["seed"], run["run"]] = run
    rows, chosen = [], []
    for images, budget in sorted({k[:2] for k in latest}):
        runs = {(k[2], k[3]): r for k, r in latest.items() if k[:2] == (images, budget)}
        accuracy = {key: r["test_accuracy"] for key, r in runs.items()}
        by_run = {name: {s for s, n in runs if n == name} for name in ("transferred", "from scratch")}
        seeds = sorted(by_run["transferred"] & by_run["from scratch"])
        if not seeds:
            continue
        transferred, scratch = (mean_se([accuracy[s, name] for s in seeds]) for name in ("transferred", "from scratch"))
        gain = mean_se([accuracy[s, "transferred"] - accuracy[s, "from scratch"] for s in seeds])
        cells = [runs[s, "transferred"].get("transfer", {}).get("cell", "-") for s in seeds]
        rows.append({"training images (classes 5-9)": images, "budget s": f"{budget:.0f}", "seeds": len(seeds),
                     "transferred": f"{transferred[0]:.4f} ± {transferred[1]:.4f}",
                     "from scratch": f"{scratch[0]:.4f} ± {scratch[1]:.4f}",
                     "transferred - scratch (paired)": f"{gain[0]:+.4f} ± {gain[1]:.4f} "
                                                       f"({'ahead' if gain[0] > gain[1] else 'not ahead'})",
                     "transfer stage chose": ", ".join(f"{c} x{cells.count(c)}" for c in sorted(set(cells))),
                     "commit": ", ".join(sorted({r["commit"] for r in runs.values()}))})
        chosen += [f"- {images} images, seed {s}: {runs[s, 'transferred']['transfer']['why']} Final policy: "
                   f"{_policy(runs[s, 'transferred'].get('config'))}; test accuracy "
                   f"{accuracy[s, 'transferred']:.4f} (scratch {accuracy[s, 'from scratch']:.4f})."
                   for s in seeds if "transfer" in runs[s, "transferred"]]
    columns = ["training images (classes 5-9)", "budget s", "seeds", "transferred", "from scratch",
               "transferred - scratch (paired)", "transfer stage chose", "commit"]
    table = markdown_table(rows, columns)
    print("\n" + table)
    reasons = "\n".join(chosen)
    update_results_md("transfer", f"""## Transfer learning on few images (`benchmarks/transfer.py`)

A backbone searched on Fashion-MNIST's classes 0-4 (all their images), then classes 5-9 with a
few training images drawn per seed: the backbone transferred, against the same architecture
from scratch, the same budget of `automl tune` each. Test accuracy on all the test images of
classes 5-9: mean ± standard error over seeds, and the paired difference ("ahead" where it
exceeds its standard error).

{table}

What each transferred tune's transfer stage measured and chose:

{reasons}

{provenance(info)}
""")


def _policy(backbone: dict | None) -> str:
    if not backbone:
        return "-"
    keys = ("weights", "cut", "trainable", "trainable_stages", "fine_tune_lr", "warmup_epochs", "unfreeze_every")
    return ", ".join(f"{k} {backbone[k]:.3g}" if isinstance(backbone[k], float) else f"{k} {backbone[k]}"
                     for k in keys if k in backbone)


if __name__ == "__main__":
    main()
