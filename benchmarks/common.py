"""What every benchmark script shares: the machine and library versions behind its figures, the
results files, and its own section of benchmarks/RESULTS.md (rewritten on each run, so that
every figure there comes from a script, not from a hand)."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
LIBRARIES = ("tensorflow", "keras", "jax", "optuna", "mlflow", "keras-tuner", "numpy")
HEADER = """# Benchmark results

Each section below is written by the script it names, from one run of it; rerun the script to
refresh it. Raw figures are in `benchmarks/results/`.
"""


def machine() -> dict:
    """Where and with what the figures were measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
            "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "versions": versions}


def provenance(info: dict) -> str:
    """One paragraph of markdown: command, machine, date, versions."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (f"`{info['command']}` on {info['cpus']} CPU cores ({info['cpu']}), {info['date']}; Python "
            f"{info['python']}, Keras backend {info['keras_backend']}; {versions}.")


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def update_results_md(section: str, markdown: str) -> None:
    """Replace this script's section of RESULTS.md (between its markers), keeping the others."""
    begin, end = f"<!-- {section}: begin -->", f"<!-- {section}: end -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    RESULTS_MD.write_text(text)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    from tabulate import tabulate

    return tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns, tablefmt="github")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (nan for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def head_commit() -> str:
    """The short hash of the checkout the benchmark runs."""
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def ensure_data(name: str) -> None:
    """Fashion-MNIST from Debian's package: installed here if missing and we may."""
    if name != "fashion_mnist" or Path("/usr/share/datasets/fashion-mnist").exists() \
            or os.environ.get("AUTOML_FASHION_MNIST_DIR"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True)
