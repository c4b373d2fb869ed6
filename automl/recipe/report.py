"""``automl report``: what a tune did and why, as Markdown (figures beside it) or one HTML file.

Everything comes from the Optuna storage: the tune study's stage records and final trial, and
the coarse and refine studies; so a report can be written again at any time, from any machine
that reaches the storage.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd

from automl.errors import UserError
from automl.hpo import records
from automl.hpo.records import StudyInfo, TrialRecord
from automl.hpo.storage import load_study
from automl.recipe.context import ReportView
from automl.recipe.outcomes import Outcomes, StageRecord
from automl.recipe.plan import stage_of

FILES = "report_files"


def write_report(study_name: str, storage: str, out: str | Path) -> Path:
    """Write the report of tune ``study_name`` to ``out`` (.md or .html); returns the path."""
    out = Path(out)
    if out.suffix not in (".md", ".html"):
        raise UserError(f"--out {out}: the report is written as .md or .html")
    tune = load_study(study_name, storage)
    outcomes = Outcomes({name: StageRecord.from_dict(record) for name, record in records.stage_records(tune).items()})
    if not outcomes.records:
        raise UserError(f"--study {study_name}: not a tune, or no stage has finished yet")
    figures = out.parent / FILES
    figures.mkdir(parents=True, exist_ok=True)
    searches = {name: load_study(search.study, storage) for name, search in outcomes.searches()}
    view = ReportView(tune, searches, figures)
    text = "\n".join(_sections(outcomes, view)) + "\n"
    if out.suffix == ".md":
        out.write_text(text)
    else:
        out.write_text(_html(text, out.parent, study_name))
    return out


def _sections(outcomes: Outcomes, view: ReportView):
    info = StudyInfo.of(view.tune)
    yield f"# Tune report: {view.tune.study_name}\n"
    yield (f"Space `{info.space}` on data `{info.data}` ({info.num_classes} classes, input "
           f"{'x'.join(str(d) for d in info.input_shape or [])}); objective {info.objective}. "
           f"{budget_use(outcomes)}\n")
    final = records.best_trial(view.tune)
    if final is not None:
        tests = {k: v for k, v in TrialRecord.of(final).metrics.items() if k.startswith("test_")}
        yield "**Final model**: " + ", ".join(f"{k} {v:.4f}" for k, v in tests.items()) + "\n"
    rounds = [out for _, out in outcomes.rounds()]
    if rounds:
        last = rounds[-1]
        yield (f"**The loop** ran {len(rounds)} refine round{'s' if len(rounds) > 1 else ''}"
               + (f" and stopped: {last.loop_why}.\n" if last.loop_why and not last.again else ".\n"))
    rows = [{"stage": r.stage, "result": "ok" if r.ok else "STOPPED", "verdict": r.verdict, "seconds": r.seconds,
             "budget": r.budget} for r in outcomes.values()]
    yield pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f") + "\n"
    for record in outcomes.values():
        yield f"## {record.stage}\n"
        yield record.summary + "\n"
        if record.changes:
            yield "Changes for the next stages:\n\n" + "".join(f"- {c}\n" for c in record.changes)
        yield from stage_of(record).report(record, view)


USED = 0.95  # a tune that ends with less than this part of its budget spent says why


def budget_use(outcomes: Outcomes) -> str:
    """How much of its budget the tune spent and, where it left more than a twentieth, why: the
    final is given all that is left, so only its early stop (it converged) leaves time unused."""
    spent, final = outcomes.seconds(), outcomes.get("final")
    if final is None:
        return f"Stages took {spent:.0f} s in all."
    m = final.measured
    budget = m.get("tune_budget") or spent - final.seconds + final.budget  # the final gets what is left
    line = f"Stages took {spent:.0f} s of the {budget:.0f} s budget"
    if spent >= USED * budget:
        return line + "."
    run, planned = m.get("epochs_run"), m.get("planned_epochs")
    if run and planned and run < planned and m.get("best_epoch") == run:
        return (line + f": the final's time stopped it at epoch {run} of the {planned} planned, still improving, "
                "and what was left afforded no other model: its costs were foreseen too low.")
    if run and planned and run < planned:
        return (line + f": the final converged, stopped early at epoch {run} of the {planned} planned, as its "
                f"held-out part had not improved since epoch {m['best_epoch']}.")
    return line + f": the final trained its {run} planned epochs faster than foreseen."


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
