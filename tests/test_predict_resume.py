"""A prediction killed mid-run resumes: only the tiles without a marker are predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import DataError
from cropflow.predict import PredictParams, open_prediction, predict
from cropflow.predict.store import done_tiles
from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube
from cropflow.settings import get_settings

CLASSES = ClassMap(
    classes=[ClassDef(id=2, name="crop", color="#ffaa00"), ClassDef(id=3, name="other")]
)
MODEL = {"name": "tempcnn", "conv_widths": [8], "kernel_size": 3, "hidden_size": 16}
BANDS = ["nir", "red"]
T = 3

# Run in a separate process and killed with SIGKILL: it builds the same seeded model and
# predicts slowly (its progress callback sleeps) so that the kill lands mid-run.
SCRIPT = """
import json, sys, time
from cropflow.classes import ClassMap
from cropflow.predict import PredictParams, predict
from cropflow.predict.testing import tiny_bundle

cfg = json.loads(sys.argv[2])
bundle = tiny_bundle(cfg["model"], cfg["bands"], cfg["t"], ClassMap(**cfg["classes"]), "pixel")
params = PredictParams(cube=sys.argv[1], key="resume", tile_size=16, executor="local")
predict(params, bundle, on_progress=lambda done, total: time.sleep(0.2))
"""


@pytest.mark.slow
def _one_store(folder: Path) -> Path:
    """The store the killed run writes (its name is its fingerprint; none yet: a dummy)."""
    stores = sorted(folder.glob("*.zarr")) if folder.is_dir() else []
    assert len(stores) <= 1, stores
    return stores[0] if stores else folder / "not-yet.zarr"


@pytest.mark.faults
def test_killed_prediction_resumes_with_only_the_missing_tiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = {b: smooth_noise((T, 80, 96), rng) for b in BANDS}
    cube = write_cube(
        tmp_path / "c.zarr",
        data,
        ["2021-05-01", "2021-06-01", "2021-07-01"],
        Affine(20, 0, 300000, 0, -20, 4600000),
        "EPSG:32631",
    )
    total = 5 * 6
    bundle = tiny_bundle(MODEL, BANDS, T, CLASSES, "pixel")
    reference = predict(
        PredictParams(cube=str(cube), key="reference", tile_size=16, executor="local"), bundle
    )

    folder = get_settings().workdir / "predictions" / "resume"  # one store per identity
    cfg = {"model": MODEL, "bands": BANDS, "t": T, "classes": CLASSES.model_dump()}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(cube), json.dumps(cfg)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    try:
        while len(done_tiles(store := _one_store(folder))) < 4:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the prediction never started"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind runs
        proc.wait()
    done_before = len(done_tiles(store))
    assert 4 <= done_before < total

    with pytest.raises(DataError, match="incomplete"):
        open_prediction(store)

    resumed = predict(
        PredictParams(cube=str(cube), key="resume", tile_size=16, executor="local"), bundle
    )
    assert resumed.tiles_total == total
    assert resumed.tiles_skipped == done_before
    assert resumed.tiles_predicted == total - done_before
    a = open_prediction(resumed.store).load()
    b = open_prediction(reference.store).load()
    for var in ("class_id", "probability", "confidence"):
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
