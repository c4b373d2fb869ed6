"""The terminal shows automl's lines only: framework start-up noise is filtered out of stderr.

TensorFlow 2.21 and XLA write absl/glog lines ("All log messages before absl::InitializeLog()",
cudart, oneDNN, cuInit) straight to file descriptor 2 from C++, on import and at the first
device initialisation, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect; no Python setting stops
them. So the ``automl`` command routes its descriptor 2 through a small filter process that
drops the lines known to be such noise and passes every other line on unchanged: a genuine
error is never swallowed, and a filter in a process of its own still passes on the last lines
of a process that crashed. Worker processes inherit the filtered descriptor. ``--debug``
shows everything, in worker processes too, with the tracebacks of failed trials.

Run as a script, this file is the filter (standard library only, so it starts in milliseconds).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys

DEBUG_ENV = "AUTOML_DEBUG"  # "1": --debug was given here or to the command that started this process
FILTERED_ENV = "AUTOML_STDERR_FILTERED"  # set once a process filters descriptor 2; its children share it
POOL_ENV = "AUTOML_POOL"  # the process id of the search whose pool started this worker

_GLOG = re.compile(r"^(?P<level>[IWEF])\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\] (?P<message>.*)$")
# Warnings and errors that every CPU-only or GPU start-up prints and that change nothing; any other
# W/E/F line passes. I-lines are information by definition and all go.
_GLOG_NOISE = re.compile(
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|TF-TRT Warning: Could not find TensorRT|"
    r"could not open file to read NUMA node"
)
_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$|"
    # the second line of TensorFlow's cpu_feature_guard I-line
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$|"
    # JAX without a CUDA build on a machine with a GPU driver
    r"^An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed\. "
    r"Falling back to cpu\.$|"
    # a process that builds many models (trials, probes, a final's members) traces a function for each:
    # TensorFlow's hint to the programmer, nothing the user can act on
    r"^WARNING:tensorflow:\d+ out of the last \d+ calls to <function .*> triggered tf\.function retracing\. "
)


def is_noise(line: str) -> bool:
    """Whether ``line`` (without its newline) is framework start-up noise rather than news."""
    glog = _GLOG.match(line)
    if glog:
        return glog["level"] == "I" or bool(_GLOG_NOISE.search(glog["message"]))
    return bool(_NOISE.match(line))


def pool_worker() -> bool:
    """Whether this process is a worker that ``automl search --workers`` started and speaks for."""
    return bool(os.environ.get(POOL_ENV))


def setup(debug: bool, command: bool) -> bool:
    """Quiet this process as the ``automl`` command should be; returns whether it is debugging
    (``--debug`` here or in the command that started it). ``command``: this process is the
    command itself, not a caller of ``cli.main`` (a test), whose stderr and environment stay."""
    debug = debug or os.environ.get(DEBUG_ENV) == "1"
    if debug:
        if command:
            os.environ[DEBUG_ENV] = "1"  # worker processes show everything too
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("automl").setLevel(logging.DEBUG)
        return True
    # Optuna logs every failed trial with its traceback (optuna/study/_optimize.py); automl says
    # why in one line, and keeps the traceback in the trial's MLflow run.
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)
    # Ctrl-C landing in a garbage-collector callback (JAX registers one) is printed by Python as
    # "Exception ignored in ..." with a traceback; automl reports the interrupt in one line anyway.
    sys.unraisablehook = _quiet_unraisable
    if command and not os.environ.get(FILTERED_ENV):
        _route_stderr_through_filter()
    return False


def _quiet_unraisable(unraisable) -> None:
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _route_stderr_through_filter() -> None:
    if sys.stderr is None:  # started with descriptor 2 closed: nothing to filter
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    # Its own session: Ctrl-C, sent to the terminal's process group, must not stop the filter
    # before it has passed on the "interrupted" line.
    filter_process = subprocess.Popen([sys.executable, "-I", __file__], stdin=subprocess.PIPE, stdout=terminal,
                                      start_new_session=True)
    os.dup2(filter_process.stdin.fileno(), 2)
    filter_process.stdin.close()
    os.environ[FILTERED_ENV] = str(os.getpid())

    def drain() -> None:  # every line out before the shell prompt comes back
        sys.stderr.flush()
        os.dup2(terminal, 2)
        try:
            filter_process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child still holds the pipe; it keeps the filter alive
            pass

    atexit.register(drain)


def _filter(source, sink) -> None:
    for line in source:
        if not is_noise(line.rstrip(b"\r\n").decode("utf-8", "replace")):
            sink.write(line)
            sink.flush()


if __name__ == "__main__":
    _filter(sys.stdin.buffer, sys.stdout.buffer)
