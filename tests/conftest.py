"""Test-session isolation: every test session gets its own workdir and Prefect home."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before anything imports prefect: an isolated Prefect home and no telemetry.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="cropflow-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_ROOT / "prefect-home"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["CROPFLOW_WORKDIR"] = str(_SESSION_ROOT / "work")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on 2 shared cores, torch's default of 2 slows tests 5-10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures``: real data nobody on this project made."""
    if not FIXTURES.is_dir():
        raise RuntimeError(f"shared fixtures not found at {FIXTURES}; clone ../shared beside")
    return FIXTURES


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for tests that run flows (one per test session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """An in-process Dask cluster (1 worker, 2 threads) shared by the tests of one module."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture
def test_mlflow(
    session_root: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """MLflow on the session's training store (one SQLite file: creating one takes seconds),
    with a registered model of this test's own; returns the tracking URI. Modules whose every
    test trains use it with ``pytestmark = pytest.mark.usefixtures("test_mlflow")``."""
    import re

    folder = session_root / "train-mlflow"
    folder.mkdir(exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", uri)
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    monkeypatch.setenv("CROPFLOW_MLFLOW__REGISTERED_MODEL", f"{request.module.__name__}-{name}")
    return uri
