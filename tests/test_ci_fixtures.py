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


GROUPED = """import os, pytest
pytestmark = pytest.mark.xdist_group(name="shared")

@pytest.fixture(scope="module")
def shared():
    with open("setups", "a") as setups:
        setups.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

""" + "".join(f"def test_{n}(shared):\n    pass\n\n" for n in range(6))


def test_a_grouped_module_runs_on_one_worker_so_its_shared_fixture_is_set_up_once(tmp_path):
    """`make test` relies on it: test_tune and test_tune_workers each share one costly tune."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_other.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist",
                           "loadgroup", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert len((tmp_path / "setups").read_text().split()) == 1, "the grouped module ran on both workers"
