"""`automl ui` serves the local MLflow store on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mlflow import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_shows_the_local_store(tmp_path):
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").create_experiment("visible-study")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "automl.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                         data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
        deadline, names = time.monotonic() + 120, None
        while time.monotonic() < deadline and names is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    names = [e["name"] for e in json.load(response)["experiments"]]
            except OSError:
                time.sleep(1)
        assert names is not None and "visible-study" in names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
