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
from automl.settings import local_file
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
    """Refuse a --out folder, an MLflow or Optuna store (a SQLite or journal file, a database server)
    that cannot be written."""
    check_out(out)
    for option, uri, probe in (("--tracking-uri", tracking_uri, _RUNS), ("--storage", storage, _TRIALS)):
        file = local_file(uri)
        if file is not None:
            check_file(f"{option} {uri}", file)
        elif uri.startswith(("http://", "https://")):
            _check_server(option, uri)
        else:
            _check_database(option, uri, probe)


def check_out(out: str | Path) -> None:
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


def check_file(given: str, file: Path, make_folder: bool = False) -> None:
    """``file`` can be written or created, and so can files beside it (SQLite writes its journal beside
    the database, a report its figures); its folder must exist unless the command makes it."""
    if not make_folder and not file.parent.is_dir():
        raise UserError(f"{given}: folder {file.parent} does not exist")
    _check_folder(given, file.parent)
    if file.exists():
        try:
            os.close(os.open(file, os.O_RDWR))  # opening for writing changes nothing
        except OSError as exc:
            raise UserError(f"{given}: cannot write {file}: {exc.strerror}") from None


# A table each store updates as it runs, and one of its columns: an UPDATE of no rows asks the
# database whether this login may write there.
_TRIALS, _RUNS = ("trials", "state"), ("runs", "status")


def _check_database(option: str, uri: str, probe: tuple[str, str]) -> None:
    """A database server that takes the connection may still refuse writes (a read-only role, replica
    or default_transaction_read_only, privileges revoked): found here, in a transaction rolled back,
    rather than when the study or the MLflow run is half made. A new database's tables are made by
    Optuna and MLflow, which report a login that cannot."""
    if not uri.startswith(("postgresql", "mysql")):
        return  # other URLs are refused when opened
    import sqlalchemy

    table, column = probe
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        connection = engine.connect()
    except Exception as exc:  # SQLAlchemy reports bad URLs and unreachable servers in many ways
        raise database_refused(option, uri, "cannot open", exc) from None
    try:
        with connection.begin() as transaction:
            if sqlalchemy.inspect(connection).has_table(table):
                connection.execute(sqlalchemy.text(f"UPDATE {table} SET {column} = {column} WHERE 1 = 0"))
            elif connection.dialect.name == "postgresql":  # its DDL is transactional: rolled back, never was
                connection.execute(sqlalchemy.text("CREATE TABLE automl_write_probe (x integer)"))
            transaction.rollback()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise database_refused(option, uri, "cannot write", exc) from None
    finally:
        connection.close()
        engine.dispose()


SERVER_TIMEOUT = 10  # seconds an MLflow server has to answer one request


def _check_server(option: str, uri: str) -> None:
    """An MLflow tracking server answers, and lets this login search its experiments: a server that
    is down, a wrong port or refused credentials is one line here, not two minutes of MLflow's
    own retries after the study was made. The server checks its writes itself."""
    import requests

    from automl.secrets import masked

    token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                              auth=auth, headers=headers, timeout=SERVER_TIMEOUT,
                              verify=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true")
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise UserError(f"{option} {masked(uri)}: cannot reach the MLflow server ({reason})") from None
    if not answer.ok:
        raise UserError(f"{option} {masked(uri)}: the MLflow server answered HTTP {answer.status_code} "
                        f"{answer.reason}")


def database_refused(option: str, uri: str, what: str, exc: Exception) -> UserError:
    """One line for a database's refusal: the URL masked, the driver's own error (e.g. InsufficientPrivilege)
    and its first line, with any password it quotes hidden."""
    from automl.secrets import masked, scrubbed

    error = getattr(exc, "orig", None) or exc
    reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
    return UserError(f"{option} {masked(uri)}: {what} ({scrubbed(reason, uri)})")
