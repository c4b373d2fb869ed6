import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


@pytest.fixture
def write_space(tmp_path):
    """Write a space file from dedented YAML text; returns its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture(scope="session")
def digits():
    from automl.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL database on loopback, with a password, for this test session (see
    tests/postgres.py). Under CI (``CI`` set, as .ci/run and every CI service set it) a server
    that cannot start fails the tests that need it instead of skipping them: a green CI means
    they ran."""
    from .postgres import postgres_server

    with postgres_server() as url:
        if url.startswith("skip: "):
            reason = url.removeprefix("skip: ")
            if os.environ.get("CI", "").lower() not in ("", "0", "false"):
                pytest.fail(f"PostgreSQL is required under CI: {reason}")
            pytest.skip(reason)
        yield url
