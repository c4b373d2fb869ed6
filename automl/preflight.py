"""Checks a command makes before its slow imports and before it writes anything.

A bad ``--data``, space file or study name, or a folder it cannot write, is one line within a
second, not after TensorFlow has loaded (about 15 s), a study has been created or a first trial
has trained (a read-only ``--out`` was once found only when that trial saved its model).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from automl.data import data_kind
from automl.errors import UserError
from automl.space import SearchSpace

# One or more segments joined by "/" (the tune's stages are the studies <study>/coarse and
# <study>/refine): each starts with a letter, digit or "_", so none is "." or "..", and the
# study's folder under --out stays under it.
_STUDY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,99}")


def check_study_name(name: str) -> None:
    segments = name.split("/")
    if len(name) > 200 or not all(_STUDY_SEGMENT.fullmatch(s) for s in segments):
        raise UserError(f"--study {name!r}: a study name is letters, digits and _ . + = @ - (not starting with "
                        f"'.'), optionally in parts joined by '/'; it names a folder under --out")


def check_inputs(space: str, data: str, study: str | None) -> SearchSpace:
    """The space file, the data spec and a given study name; returns the loaded space."""
    if study is not None:
        check_study_name(study)
    loaded = SearchSpace.load(space)
    data_kind(data)
    return loaded


def check_destinations(out: str, tracking_uri: str, storage: str) -> None:
    """Refuse a --out folder, an MLflow SQLite file or an Optuna journal/SQLite file that cannot be written."""
    check_out(out)
    _check_file_uri("--tracking-uri", tracking_uri)
    _check_file_uri("--storage", storage)


def check_out(out: str) -> None:
    _check_folder(f"--out {out}", Path(out))


def _check_folder(given: str, folder: Path) -> None:
    """``folder``, or the nearest folder above it that exists (the command creates the rest), takes files.
    Tested by creating an unnamed temporary file: permissions, read-only mounts and immutable folders
    all answer, for root too, and nothing is left behind."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{given}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{given}: cannot write in {existing}: {exc.strerror}") from None


def _check_file_uri(option: str, uri: str) -> None:
    """SQLite and journal files (local ones: servers are checked by connecting, later) must be writable,
    and so must their folder (SQLite writes its journal beside the database)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?")[0]
        if not path or path == ":memory:":
            return
    elif uri.startswith("journal:") or uri.endswith(".journal"):
        path = uri.removeprefix("journal:")
    else:
        return
    file = Path(path)
    if not file.parent.is_dir():
        raise UserError(f"{option} {uri}: folder {file.parent} does not exist")
    _check_folder(f"{option} {uri}", file.parent)
    if file.exists():
        try:
            os.close(os.open(file, os.O_RDWR))  # opening for writing changes nothing
        except OSError as exc:
            raise UserError(f"{option} {uri}: cannot write {file}: {exc.strerror}") from None
