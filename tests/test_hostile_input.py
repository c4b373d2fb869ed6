"""Hostile and malformed input, and destinations that cannot be written: the real CLI answers with
exit code 2 and one line naming the file, quickly, and writes nothing (no study, no MLflow run)."""

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from automl.cli import main
from automl.config import TrialConfig
from automl.errors import ModelTooLarge, SpaceError, UserError
from automl.model_size import MEMORY_CAP_ENV, check_size, estimate_size
from automl.preflight import check_study_name
from automl.space import SearchSpace

from .conftest import ROOT, SPACES

QUICK = str(SPACES / "quick.yaml")
STAGE = "model:\n  stages:\n    - {family: vgg, filters: 16}\n"
# no input needs the search machinery to be refused: the line comes long before TensorFlow's ~15 s
# import (most in about 2 s; those that load the data to check it, 4 s, on a busy 2-core machine)
QUICKLY = 12.0


def automl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> tuple[subprocess.CompletedProcess,
                                                                                         float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "automl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return proc, time.perf_counter() - start


def assert_refused(proc: subprocess.CompletedProcess, seconds: float, *phrases: str) -> str:
    """Exit 2, exactly one line on stderr, ``automl: error:`` and each phrase, no escape character, quickly."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("automl: error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "\x1b" not in proc.stderr
    assert seconds < QUICKLY, f"{seconds:.1f} s"
    return lines[0]


def refused_in_process(capsys, argv: list[str], *phrases: str) -> str:
    """``automl ARGV`` run in this process (where the framework, once loaded, stays loaded), then as
    assert_refused."""
    start = time.perf_counter()
    code = main(argv)
    seconds, printed = time.perf_counter() - start, capsys.readouterr()
    return assert_refused(subprocess.CompletedProcess(argv, code, printed.out, printed.err), seconds, *phrases)


def assert_nothing_written(folder: Path, before: set[str]) -> None:
    """No study (journal), no MLflow database, no output folder: only what the test put there."""
    assert {p.name for p in folder.iterdir()} == before


def search(folder: Path, space: str = QUICK, data: str = "digits", *more: str, env: dict | None = None):
    before = {p.name for p in folder.iterdir()}
    proc, seconds = automl("search", "--space", space, "--data", data, "--trials", "1", "--epochs", "1", *more,
                           cwd=folder, env=env)
    assert_nothing_written(folder, before)
    return proc, seconds


# --- space files ---------------------------------------------------------------------------


def _billion_laughs() -> str:
    """Nine levels of nine aliases: 456 bytes that expand to 10^9 strings."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    return text


HOSTILE_SPACES = [
    ("laughs.yaml", _billion_laughs(), ["more than 3,000 values"]),
    ("deep.yaml", "model: " + "[" * 1000 + "]" * 1000 + "\n", ["nested more than 64 levels"]),
    ("latin1.yaml", b"model:\n  stages: []\n  # caf\xe9\n", ["latin1.yaml:3:", "not UTF-8"]),
    ("ansi.yaml", STAGE + '  "\\e[31mred\\e[0m": 1\n', ["ansi.yaml:4:", "\\x1b[31mred", "unknown key"]),
    ("huge.yaml", "# padding\n" * 200_000, ["file too large"]),
    ("raw.yaml", STAGE + '  x: "\x1b[2J"\n', ["raw.yaml:4:", "unacceptable character #x001b"]),
    ("key.yaml", STAGE + "  ? [a, b]\n  : 1\n", ["key.yaml:4:", "keys must be strings"]),
]


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name, content, phrases", HOSTILE_SPACES[:4])
def test_hostile_space_file_is_one_line(tmp_path, name, content, phrases):
    path = _write(tmp_path, name, content)
    proc, seconds = search(tmp_path, str(path))
    assert_refused(proc, seconds, str(path), *phrases)


@pytest.mark.parametrize("name, content, phrases", HOSTILE_SPACES)
def test_hostile_space_file_is_a_space_error(tmp_path, name, content, phrases):
    path = _write(tmp_path, name, content)
    start = time.perf_counter()
    with pytest.raises(SpaceError) as info:
        SearchSpace.load(path)
    assert time.perf_counter() - start < 2
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value) and "\x1b" not in str(info.value)
    for phrase in phrases:
        assert phrase in str(info.value)


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_space_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, special):
    path = special
    if special == "fifo":  # no writer: opening it would block forever
        path = str(tmp_path / "space.yaml")
        os.mkfifo(path)
    proc, seconds = search(tmp_path, path)
    assert_refused(proc, seconds, path, "not a regular file")


# --- bounds and model size -----------------------------------------------------------------


OUT_OF_BOUNDS = [
    ("model:\n  stages:\n    - {family: vgg, filters: 1000000000000}\n", ["model.stages.0.filters", "65536"]),
    ("model:\n  stem:\n    - {filters: 8, kernel_size: 100000}\n" + STAGE[7:], ["model.stem.0.kernel_size"]),
    ("model:\n  stages:\n    - {family: resnet, filters: 8, blocks: 1000000}\n", ["model.stages.0.blocks"]),
    ("model:\n  head:\n    dense: [1000000000000]\n" + STAGE[7:], ["model.head.dense.0"]),
    (STAGE + "training:\n  optimizer: {name: adam, learning_rate: .inf}\n",
     ["training.optimizer.learning_rate", "finite"]),
    (STAGE + "training:\n  optimizer:\n    name: adam\n    learning_rate: {float: [1.0e-4, .inf], log: true}\n",
     ["training.optimizer.learning_rate.float", "finite"]),
    (STAGE + "regularization:\n  l2: .nan\n", ["regularization.l2", "finite"]),
    (STAGE + "training:\n  batch_size: {int: [16, 1000000000000], default: 32}\n",
     ["training.batch_size", "65536", "with training.batch_size=1000000000000"]),
]


def test_out_of_bounds_value_is_one_line(tmp_path):
    space = _write(tmp_path, "space.yaml", OUT_OF_BOUNDS[0][0])
    proc, seconds = search(tmp_path, str(space))
    assert_refused(proc, seconds, f"{space}:3: model.stages.0.filters", "65536")


@pytest.mark.parametrize("body, phrases", OUT_OF_BOUNDS)
def test_out_of_bounds_values_name_the_field(tmp_path, body, phrases):
    with pytest.raises(SpaceError) as info:
        SearchSpace.load(_write(tmp_path, "space.yaml", body))
    for phrase in phrases:
        assert phrase in str(info.value)


def test_estimated_parameters_match_keras_exactly():
    """The estimate follows the builder layer for layer: the family spaces' defaults, ResNet-20, and
    random configurations of full.yaml (every family, bottleneck, pre-activation, SE, factorized
    Inception, stems and heads). (It matches every reference network too, VGG16 to DenseNet-121, but
    building those takes a minute.)"""
    import optuna

    from automl.builder import build_model
    from automl.space import OptunaSuggester

    configs = [SearchSpace.load(p).default() for p in sorted(SPACES.glob("*.yaml")) if "backbone" not in p.read_text()]
    configs.append(SearchSpace.load(SPACES / "reference" / "resnet20.yaml").default())
    full = SearchSpace.load(SPACES / "full.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs += [full.sample(OptunaSuggester(study.ask())) for _ in range(5)]
    for config in map(TrialConfig.model_validate, configs):
        shape = (32, 32, 3)
        assert estimate_size(config, shape, 10).params == build_model(config, shape, 10).count_params(), config


def test_params_refuses_a_model_too_large_before_building_it(tmp_path):
    space = tmp_path / "wide.yaml"
    space.write_text("model:\n  stages:\n    - {family: vgg, filters: 64}\n    - {family: vgg, filters: 65536}\n")
    proc, seconds = automl("spaces", "params", str(space), "--input-shape", "224,224,3", "--classes", "10",
                           cwd=tmp_path)
    assert_refused(proc, seconds, "model.stages.1:", "model too large", MEMORY_CAP_ENV)


WIDE_OPTION = ("model:\n  stages:\n    - family: vgg\n      filters: {choice: [16, 65536]}\n"
               "    - {family: vgg, filters: 65536}\n")


def test_search_refuses_a_too_large_option_before_the_first_trial(tmp_path):
    space = _write(tmp_path, "wide.yaml", WIDE_OPTION)
    proc, seconds = search(tmp_path, str(space))
    assert_refused(proc, seconds, f"{space}:", "model.stages.1", "model too large")


def test_study_create_refuses_a_too_large_option_before_creating_the_study(tmp_path, monkeypatch, capsys):
    space = _write(tmp_path, "wide.yaml", WIDE_OPTION)
    monkeypatch.chdir(tmp_path)
    refused_in_process(capsys, ["study", "create", "--space", str(space), "--trials", "1"], f"{space}:",
                       "model.stages.1", "model too large")
    assert_nothing_written(tmp_path, {"wide.yaml"})


def test_the_memory_cap_is_the_users_to_raise(monkeypatch):
    config = TrialConfig.model_validate({"model": {"stages": [{"family": "vgg", "filters": 256}]},
                                         "training": {"batch_size": 256}})
    size = estimate_size(config, (32, 32, 3), 10)
    needed = size.training_bytes(256) / 1e9
    monkeypatch.setenv(MEMORY_CAP_ENV, str(needed * 0.9))
    with pytest.raises(ModelTooLarge) as info:
        check_size(config, (32, 32, 3), 10)
    assert info.value.part == "model.stages.0"
    check_size(config, (32, 32, 3), 10, training=False)  # its weights alone fit
    monkeypatch.setenv(MEMORY_CAP_ENV, str(needed * 1.1))
    assert check_size(config, (32, 32, 3), 10).params == size.params


# --- data ----------------------------------------------------------------------------------


def _images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8), dtype=np.float32)


def _labels(n: int = 40) -> np.ndarray:
    return np.arange(n) % 2


def _broken_zip(path: Path) -> None:
    np.savez(path, x_train=_images(), y_train=_labels())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # torn: the central directory is gone


def _bad_member(path: Path) -> None:
    np.savez(path, x_train=_images(), y_train=_labels())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("x_train.npy").header_offset
    data = bytearray(path.read_bytes())
    data[offset + 200: offset + 400] = b"\xff" * 200  # inside the stored array: its CRC fails
    path.write_bytes(bytes(data))


BAD_NPZ = [
    ("objects.npz", lambda p: np.savez(p, x_train=np.array([object()] * 40, dtype=object), y_train=_labels()),
     ["'x_train' holds Python objects"]),
    ("strings.npz", lambda p: np.savez(p, x_train=_images(), y_train=np.array(["cat", "dog"] * 20)),
     ["y_train must hold integer class indices", "<U3"]),
    ("broken.npz", _broken_zip, ["not a readable .npz file"]),
    ("member.npz", _bad_member, ["'x_train' is unreadable"]),
    ("huge_label.npz", lambda p: np.savez(p, x_train=_images(), y_train=np.r_[_labels(39), 10**9]),
     ["y_train has label 1000000000"]),
    ("nan.npz", lambda p: np.savez(p, x_train=np.where(np.eye(8, dtype=bool), np.nan, _images()), y_train=_labels()),
     ["x_train has NaN or infinite pixel values in 40 images"]),
    ("inf.npz", lambda p: np.savez(p, x_train=_images(), y_train=_labels(), x_val=np.full((4, 8, 8), np.inf),
                                   y_val=_labels(4)), ["x_val has NaN or infinite pixel values"]),
]


@pytest.mark.parametrize("name, make, phrases", [BAD_NPZ[0], BAD_NPZ[4]])
def test_bad_npz_is_one_line_before_training(tmp_path, name, make, phrases):
    path = tmp_path / name
    make(path)
    proc, seconds = search(tmp_path, data=str(path))
    assert_refused(proc, seconds, str(path), *phrases)


@pytest.mark.parametrize("name, make, phrases", BAD_NPZ)
def test_bad_npz_names_file_and_problem(tmp_path, name, make, phrases):
    from automl.data import load_dataset

    path = tmp_path / name
    make(path)
    with pytest.raises(UserError) as info:
        load_dataset(str(path))
    assert str(info.value).startswith(f"{path}: ")
    for phrase in phrases:
        assert phrase in str(info.value)


def test_tune_blames_nan_pixels_not_the_learning_rate(tmp_path):
    path = tmp_path / "nan.npz"
    np.savez(path, x_train=np.where(np.eye(8, dtype=bool), np.nan, _images()), y_train=_labels())
    before = {p.name for p in tmp_path.iterdir()}
    proc, seconds = automl("tune", "--space", QUICK, "--data", str(path), "--budget", "30", cwd=tmp_path)
    assert_refused(proc, seconds, str(path), "NaN or infinite pixel values")
    assert_nothing_written(tmp_path, before)


@pytest.mark.parametrize("data, phrases", [
    ("nope", ["--data: unknown data set 'nope'"]),
    ("missing.npz", ["missing.npz: no such file"]),
    ("no/such/folder", ["no/such/folder: no such file or folder"]),
])
def test_bad_data_spec_is_reported_before_the_framework_loads(tmp_path, data, phrases):
    probe = tmp_path / "probe"  # where Keras's first import would leave a mark (tests/framework_probe)
    probe.mkdir()
    env = {"PYTHONPATH": f"{ROOT / 'tests' / 'framework_probe'}:{ROOT}", "AUTOML_TEST_PROBE": str(probe)}
    proc, seconds = search(tmp_path, QUICK, data, env=env)
    assert_refused(proc, seconds, *phrases)
    assert not list(probe.iterdir())


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


@pytest.fixture
def ghostscript_spy(tmp_path):
    """A ``gs`` first on PATH that leaves a mark when anything runs it; yields (env, mark)."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    gs.chmod(gs.stat().st_mode | stat.S_IEXEC)
    yield {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, mark


def test_eps_named_png_never_reaches_ghostscript(tmp_path, ghostscript_spy):
    from PIL import Image

    env, mark = ghostscript_spy
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "images" / label / f"{i}.png")
    eps = tmp_path / "images" / "b" / "9.png"
    eps.write_bytes(EPS)
    proc, seconds = search(tmp_path, QUICK, str(tmp_path / "images"), env=env)
    assert_refused(proc, seconds, str(eps), "not a readable PNG/JPEG image")
    assert not mark.exists()


def test_predict_opens_only_its_image_formats(tmp_path, monkeypatch, ghostscript_spy):
    import keras

    from automl.api import predict

    env, mark = ghostscript_spy
    monkeypatch.setenv("PATH", env["PATH"])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))).save(
        model_dir / "model.keras")
    (model_dir / "automl.json").write_text(json.dumps({"input_shape": [8, 8, 1], "class_names": ["a", "b"]}))
    eps = tmp_path / "photo.png"
    eps.write_bytes(EPS)
    with pytest.raises(UserError, match="photo.png: cannot read image"):
        list(predict(model_dir, [str(eps)]))
    assert not mark.exists()


# --- study names and destinations ----------------------------------------------------------


@pytest.mark.parametrize("command, study", [("tune", "../../escaped"), ("search", "a/../../escaped"),
                                            ("search", "/tmp/escaped")])
def test_study_name_cannot_leave_out(tmp_path, command, study):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    proc, seconds = automl(command, "--space", QUICK, "--study", study, "--budget" if command == "tune" else "--trials",
                           "10", cwd=work)
    assert_refused(proc, seconds, "--study", "a study name is")
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "work"]


def test_study_names():
    for good in ("quick-digits", "quick-digits-tune/coarse", "run_2.b+c=d@e"):
        check_study_name(good)
    for bad in ("..", ".hidden", "a//b", "a/./b", "a b", "tab\tname", "bad\x1b[2Jname", "x" * 201, "", "a\\b"):
        with pytest.raises(UserError) as info:
            check_study_name(bad)
        assert "\x1b" not in str(info.value) and "\t" not in str(info.value)


@contextmanager
def read_only_mount(path: Path):
    """``path``, a folder or a file, contents kept, made read-only by a bind mount onto itself: root's
    writes there fail as they would for anyone (chmod does not stop root)."""
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True)
        if remounted.returncode != 0:
            pytest.skip(f"cannot make a bind mount read-only here: {remounted.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def read_only(tmp_path):
    """An empty read-only folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only_mount(folder):
        yield folder


def test_read_only_out_is_refused_before_the_study_is_created(tmp_path, read_only):
    proc, seconds = search(tmp_path, QUICK, "digits", "--out", str(read_only / "models"))
    assert_refused(proc, seconds, f"--out {read_only / 'models'}", "Read-only file system")


def test_read_only_tracking_uri_is_refused_before_the_study_is_created(tmp_path, read_only):
    uri = f"sqlite:///{read_only}/mlflow.db"
    proc, seconds = search(tmp_path, QUICK, "digits", "--tracking-uri", uri)
    assert_refused(proc, seconds, f"--tracking-uri {uri}", "Read-only file system")


def test_an_mlflow_server_that_does_not_answer_or_refuses_is_one_line_before_the_study_is_made(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, seconds = search(tmp_path, QUICK, "digits", "--tracking-uri", f"http://127.0.0.1:{port}")
    assert_refused(proc, seconds, f"--tracking-uri http://127.0.0.1:{port}: cannot reach the MLflow server")

    class Forbidding(http.server.BaseHTTPRequestHandler):  # a server whose login was refused
        def do_GET(self):
            self.send_error(403, "Forbidden")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidding) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://ann:s3cret@127.0.0.1:{server.server_address[1]}"
        proc, seconds = search(tmp_path, QUICK, "digits", "--tracking-uri", url)
        server.shutdown()
    line = assert_refused(proc, seconds, "the MLflow server answered HTTP 403 Forbidden")
    assert "s3cret" not in line and "ann:***@" in line


def test_read_only_journal_is_refused(tmp_path, read_only):
    proc, seconds = search(tmp_path, QUICK, "digits", "--storage", f"journal:{read_only}/automl.journal")
    assert_refused(proc, seconds, "--storage journal:", "Read-only file system")


# --- what study create, worker, export and report write to; databases that refuse writes ---


@pytest.fixture(scope="module")
def created_search(tmp_path_factory):
    """A search made by ``automl study create`` for workers, no trial run yet: its journal, MLflow
    database and --out in one folder. Returns the folder and the options that reach the search."""
    folder = tmp_path_factory.mktemp("search")
    store = ["--storage", f"journal:{folder}/automl.journal", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    assert main(["study", "create", "--space", QUICK, "--study", "s", "--trials", "1", "--epochs", "1", *store,
                 "--out", str(folder / "out")]) == 0
    (folder / "out").mkdir(exist_ok=True)
    return folder, store


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, read_only_part, refused", [
    ("worker", "out", "--out {folder}/out: cannot write in {folder}/out"),  # the --out the study was made with
    ("worker", "automl.journal", "--storage journal:{folder}/automl.journal: cannot write {folder}/automl.journal"),
    ("worker", "mlflow.db", "--tracking-uri sqlite:///{folder}/mlflow.db: cannot write {folder}/mlflow.db"),
    ("export", "out", "--out {folder}/out/best: cannot write in {folder}/out"),
    ("report", "out", "--out {folder}/out/s/report.md: cannot write in {folder}/out"),
])
def test_a_read_only_destination_is_refused_before_anything_is_written(created_search, capsys, command,
                                                                       read_only_part, refused):
    """A worker that could not record its trial takes none (the journal is unchanged, no MLflow run opens);
    export and report say so before they read the study."""
    folder, store = created_search
    argv = {"worker": ["worker", "--study", "s", *store],
            "export": ["export", "--study", "s", *store[:2], "--out", f"{folder}/out/best"],
            "report": ["report", "--study", "s", *store[:2], "--out", f"{folder}/out/s/report.md"]}[command]
    before = _files(folder)
    with read_only_mount(folder / read_only_part):
        refused_in_process(capsys, argv, refused.format(folder=folder), "Read-only file system")
    assert _files(folder) == before


def test_a_read_only_sqlite_storage_is_refused(tmp_path, monkeypatch, capsys):
    database = tmp_path / "optuna.db"
    database.touch()
    monkeypatch.chdir(tmp_path)
    with read_only_mount(database):
        refused_in_process(capsys, ["search", "--space", QUICK, "--trials", "1", "--storage", f"sqlite:///{database}"],
                           f"--storage sqlite:///{database}: cannot write {database}: Read-only file system")
    assert_nothing_written(tmp_path, {"optuna.db"})


@pytest.fixture(scope="module")
def read_only_logins(postgres_url, tmp_path_factory):
    """PostgreSQL logins that may connect but not write: ``read_only`` (its transactions are read-only, as
    on a standby) and ``select_only`` (granted SELECT alone). Returns a function (login, database) -> URL;
    database ``searches`` holds a search made by ``automl study create``, ``empty`` nothing yet."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_url)
    url = lambda login, database: (admin if login == "admin" else admin.set(  # noqa: E731
        username=login, password=f"pw-{login}")).set(database=database).render_as_string(hide_password=False)
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for database in ("searches", "empty"):
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    engine.dispose()
    folder = tmp_path_factory.mktemp("pg")
    assert main(["study", "create", "--space", QUICK, "--study", "s", "--trials", "1", "--storage",
                 url("admin", "searches"), "--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--out",
                 str(folder / "out")]) == 0
    engine = sqlalchemy.create_engine(url("admin", "searches"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for login, privileges in (("read_only", "ALL"), ("select_only", "SELECT")):
            connection.execute(sqlalchemy.text(f"CREATE ROLE {login} LOGIN PASSWORD 'pw-{login}'"))
            connection.execute(sqlalchemy.text(f"GRANT {privileges} ON ALL TABLES IN SCHEMA public TO {login}"))
            connection.execute(sqlalchemy.text(f"GRANT {privileges} ON ALL SEQUENCES IN SCHEMA public TO {login}"))
        connection.execute(sqlalchemy.text("ALTER ROLE read_only SET default_transaction_read_only = on"))
    engine.dispose()
    return url


@pytest.mark.parametrize("command, login, store, reason", [
    ("search", "select_only", "--storage", "InsufficientPrivilege: permission denied for table trials"),
    ("search", "read_only", "--storage", "ReadOnlySqlTransaction: cannot execute UPDATE in a read-only transaction"),
    ("study create", "read_only", "--storage", "cannot execute UPDATE in a read-only transaction"),
    ("worker", "select_only", "--storage", "permission denied for table trials"),
    ("worker", "read_only", "--storage", "cannot execute UPDATE in a read-only transaction"),
    # a new MLflow database: MLflow would make its tables after the study was created
    ("search", "read_only", "--tracking-uri", "cannot execute CREATE TABLE in a read-only transaction"),
])
def test_a_database_that_refuses_writes_is_one_line(read_only_logins, tmp_path, monkeypatch, capsys, command,
                                                     login, store, reason):
    """Before: exit 1, "unexpected error: StorageInternalError: An exception is raised during the commit",
    after TensorFlow had loaded."""
    monkeypatch.chdir(tmp_path)
    stores = {"--storage": read_only_logins(login, "searches"), "--tracking-uri": f"sqlite:///{tmp_path}/mlflow.db"}
    if store == "--tracking-uri":
        stores = {"--storage": f"journal:{tmp_path}/automl.journal", "--tracking-uri": read_only_logins(login, "empty")}
    what = ["--study", "s"] if command == "worker" else ["--space", QUICK, "--study", "s", "--trials", "1"]
    refused_in_process(capsys, [*command.split(), *what, *(x for pair in stores.items() for x in pair)],
                       f"{store} postgresql://{login}:***@", "cannot write", reason)
    assert_nothing_written(tmp_path, set())


# --- lock keys --------------------------------------------------------------------------------


def test_one_store_file_is_one_lock_however_it_is_named(tmp_path, monkeypatch):
    """Processes naming one journal or SQLite file differently (relative, absolute, through a symlink)
    share its locks and number their slots together."""
    from automl.hpo.locks import lock_path, process_slot

    (tmp_path / "store").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    journals = ["journal:store/x.journal", f"{tmp_path}/store/x.journal",
                f"journal:{tmp_path}/alias/../alias/x.journal"]
    databases = ["sqlite:///store/x.db", f"sqlite:///{tmp_path}/alias/x.db?timeout=5"]
    assert len({lock_path(url, "s") for url in journals}) == len({lock_path(url, "s") for url in databases}) == 1
    assert lock_path(journals[0], "s") != lock_path(databases[0], "s") != lock_path(databases[0], "t")
    assert process_slot(journals[0], "s") == 0
    other = subprocess.run([sys.executable, "-c", "import sys; from automl.hpo.locks import process_slot; "
                            "print([process_slot(url, 's') for url in sys.argv[1:]])", *journals[1:]],
                           cwd="/", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert other.stdout.strip() == "[1, 1]", other.stderr
