"""``automl report``: what a tune did and why, as Markdown (figures beside it) or one HTML file.

Everything comes from the Optuna storage: the tune study's stage records and final trial, and
the coarse and refine studies; so a report can be written again at any time, from any machine
that reaches the storage.
"""

from __future__ import annotations

import base64
import re
import warnings
from pathlib import Path

import optuna
import pandas as pd

from automl import plots
from automl.errors import UserError
from automl.hpo.results import best_trial, top_trials
from automl.hpo.storage import load_study
from automl.recipe.budget import STAGES
from automl.recipe.tune import RECORD_PREFIX

FILES = "report_files"


def write_report(study_name: str, storage: str, out: str | Path) -> Path:
    """Write the report of tune ``study_name`` to ``out`` (.md or .html); returns the path."""
    out = Path(out)
    if out.suffix not in (".md", ".html"):
        raise UserError(f"--out {out}: the report is written as .md or .html")
    tune = load_study(study_name, storage)
    records = {k.removeprefix(RECORD_PREFIX): v for k, v in tune.user_attrs.items() if k.startswith(RECORD_PREFIX)}
    if not records:
        raise UserError(f"--study {study_name}: not a tune, or no stage has finished yet")
    figures = out.parent / FILES
    figures.mkdir(parents=True, exist_ok=True)
    searches = {stage: load_study(records[stage]["outputs"]["study"], storage)
                for stage in ("coarse", "refine") if stage in records and "study" in records[stage]["outputs"]}
    text = "\n".join(_sections(tune, records, searches, figures)) + "\n"
    if out.suffix == ".md":
        out.write_text(text)
    else:
        out.write_text(_html(text, out.parent, study_name))
    return out


def _sections(tune: optuna.Study, records: dict, searches: dict, figures: Path):
    attrs = tune.user_attrs
    yield f"# Tune report: {tune.study_name}\n"
    spent = sum(r["seconds"] for r in records.values())
    yield (f"Space `{attrs.get('space')}` on data `{attrs.get('data')}` ({attrs.get('num_classes')} classes, input "
           f"{'x'.join(str(d) for d in attrs.get('input_shape', []))}); objective {attrs.get('objective')}. "
           f"Stages took {spent:.0f} s in all.\n")
    final = best_trial(tune)
    if final is not None:
        tests = {k: v for k, v in final.user_attrs.get("metrics", {}).items() if k.startswith("test_")}
        yield "**Final model**: " + ", ".join(f"{k} {v:.4f}" for k, v in tests.items()) + "\n"
    rows = [{"stage": s, "result": "ok" if r["ok"] else "STOPPED", "verdict": r["verdict"],
             "seconds": r["seconds"], "budget": r["budget"]} for s in STAGES if (r := records.get(s))]
    yield pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f") + "\n"
    for stage in STAGES:
        if stage not in records:
            continue
        record = records[stage]
        yield f"## {stage}\n"
        yield record["summary"] + "\n"
        if record["changes"]:
            yield "Changes for the next stages:\n\n" + "".join(f"- {c}\n" for c in record["changes"])
        yield from EXTRAS.get(stage, lambda *a: ())(record, searches, figures, tune)


def _transfer(record, searches, figures, tune):
    probes = pd.DataFrame(record["outputs"]["probes"]).rename(
        columns={"pretrained": "probe accuracy, trained backbone", "random": "probe accuracy, untrained"})
    yield "Linear probes on the backbone's pooled features (cut: stages dropped from its top):\n\n"
    yield probes.to_markdown(index=False, floatfmt=".3f") + "\n"


def _lr_range(record, searches, figures, tune):
    curves = record["outputs"].get("curves")
    if curves:
        yield _figure(plots.lr_range(curves), figures / "lr_range.png", "learning-rate range test")


def _search(stage):
    def extra(record, searches, figures, tune):
        study = searches.get(stage)
        if study is None:
            return
        done = [s for s in searches.values() if s.trials]
        parts = []  # made before yielding: a suspended generator must not hold the warnings filter
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("always", UserWarning)
            if stage == "refine" or "refine" not in searches:  # one history for both searches, after the last
                ax = optuna.visualization.matplotlib.plot_optimization_history(
                    done, target_name=tune.user_attrs.get("objective", "objective"))
                parts.append(_figure(ax.figure, figures / "optimization_history.png", "optimization history"))
            if stage == "coarse":
                try:
                    ax = optuna.visualization.matplotlib.plot_param_importances(study)
                    parts.append(_figure(ax.figure, figures / "param_importances.png",
                                         "parameter importances (coarse)"))
                except (RuntimeError, ValueError) as exc:  # e.g. fewer than two complete trials
                    parts.append(f"(no parameter importances: {exc})\n")
        if any("less than 2 trials" in str(w.message) for w in caught):
            parts.append("Some parameter values were tried fewer than twice: read the importances as rough.\n")
        yield from parts
        table = top_trials(study)
        if not table.empty:
            yield f"Top trials of `{study.study_name}`:\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n"

    return extra


def _diagnose(record, searches, figures, tune):
    study = searches.get("coarse")
    verdicts = record["outputs"].get("verdicts", {})
    if study is None:
        return
    for number, reading in verdicts.items():
        trial = study.trials[int(number)]
        history = trial.user_attrs.get("history")
        yield f"- trial {number} ({reading['value']:.4f}): **{reading['verdict']}**, {reading['why']}\n"
        if history:
            yield _figure(plots.learning_curves(history, f"trial {number}"), figures / f"curves_trial_{number}.png",
                          f"learning curves of coarse trial {number}")


def _final(record, searches, figures, tune):
    final = best_trial(tune)
    if final is None:
        return
    metrics = final.user_attrs.get("metrics", {})
    yield pd.DataFrame([metrics]).T.rename(columns={0: "value"}).to_markdown(floatfmt=".4f") + "\n"
    if final.user_attrs.get("history"):
        yield _figure(plots.learning_curves(final.user_attrs["history"], "final"), figures / "curves_final.png",
                      "learning curves of the final model (validation: the held-out part)")


EXTRAS = {"transfer": _transfer, "lr_range": _lr_range, "coarse": _search("coarse"), "diagnose": _diagnose,
          "refine": _search("refine"), "final": _final}


def _figure(fig, path: Path, caption: str) -> str:
    plots.save(fig, path)
    return f"![{caption}]({FILES}/{path.name})\n"


def _html(text: str, folder: Path, title: str) -> str:
    """One self-contained page: the Markdown rendered, its figures inlined."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"])

    def inline(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>" \
           f"</head><body>{body}</body></html>\n"
