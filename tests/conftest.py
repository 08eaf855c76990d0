"""Shared test settings.

- Without CUDA, Triton kernels run in the interpreter: TRITON_INTERPRET=1 is set here, before any test module
  imports triton (the flag is read when a kernel is decorated), so test order never matters.
- GPU tests are marked `gpu` and skipped where CUDA is absent.
- `mlflow_server`: a real `mlflow server` (sqlite backend, artifacts folder) on a free 127.0.0.1 port, for one test;
  `mlflow_server_for_module`: the same, shared by a module's tests.
Kept free of Hydra/MLflow imports: the GPU machines run the kernel tests without those packages (the server is a
subprocess, started only by the tests that ask for it).
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_mlflow_server(folder: Path):
    """A real `mlflow server` storing under `folder`; yields its URI; its whole process group is stopped at the
    end."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 90 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:  # uvicorn waits for open keep-alive connections (a browser's)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


@pytest.fixture
def mlflow_server(tmp_path: Path):
    with running_mlflow_server(tmp_path) as uri:
        yield uri


@pytest.fixture(scope="module")
def mlflow_server_for_module(tmp_path_factory):
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri
