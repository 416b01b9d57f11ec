from __future__ import annotations

import pytest

from cropflow.errors import CropflowError, EmptySearchError, StacError
from cropflow.settings import Settings


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__API_URL", "https://example.org/stac")
    monkeypatch.setenv("CROPFLOW_DASK__N_WORKERS", "7")
    s = Settings()
    assert s.stac.api_url == "https://example.org/stac"
    assert s.dask.n_workers == 7


def test_mlflow_defaults_to_sqlite_under_workdir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path))
    monkeypatch.delenv("CROPFLOW_MLFLOW__TRACKING_URI", raising=False)
    uri = Settings().mlflow_tracking_uri
    assert uri.startswith("sqlite:///")
    assert str(tmp_path) in uri


def test_error_carries_hint() -> None:
    err = EmptySearchError("no items for bbox (1, 2, 3, 4)", hint="widen the dates")
    assert isinstance(err, StacError) and isinstance(err, CropflowError)
    assert str(err) == "no items for bbox (1, 2, 3, 4) (fix: widen the dates)"
