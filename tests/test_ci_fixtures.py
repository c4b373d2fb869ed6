"""Under CI a test that needs PostgreSQL fails where no server can start, so that a green CI
means it ran; elsewhere it skips with the reason. A real pytest run, in a process of its own,
of a test that takes the ``postgres_url`` fixture, with the PostgreSQL binaries out of reach."""

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT
from .postgres import BIN_ENV

NEEDS_POSTGRES = "def test_needs_postgres(postgres_url):\n    assert postgres_url.startswith('postgresql://')\n"


# A fixture that fails makes its test an error: not a skip, and pytest exits 1
@pytest.mark.parametrize("ci, outcome, code", [("true", "1 error", 1), (None, "1 skipped", 0)])
def test_a_test_needing_postgresql_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome, code):
    (tmp_path / "conftest.py").write_text("from tests.conftest import postgres_url  # noqa: F401\n")
    (tmp_path / "test_tiny.py").write_text(NEEDS_POSTGRES)
    (tmp_path / "bin").mkdir()  # no initdb in it
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"PYTHONPATH": str(ROOT), BIN_ENV: str(tmp_path / "bin"), **({"CI": ci} if ci else {})})
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rfs",
                           "test_tiny.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"=+ {outcome} in [\d.]+s =+", summary), done.stdout[-3000:]  # that alone
    reason = f"no PostgreSQL binaries in {BIN_ENV}={tmp_path / 'bin'}"
    assert (f"PostgreSQL is required under CI: {reason}" if ci else reason) in done.stdout
