"""Storage faults: a full disk and a read-only folder give one clear error naming the folder,
and never leave a half-written product where a good one was.

The faults are real: a small tmpfs (full) and a tmpfs remounted read-only (the tests run as
root, for whom permission bits do not apply). Where mounting is not allowed the tests say so
and skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from distributed import Client
from test_cube_support import make_scene

from cropflow.classes import ClassDef, ClassMap
from cropflow.cube import CubeParams, GridParams, plan_cube, write_cube
from cropflow.errors import StorageError
from cropflow.predict import PredictParams, predict
from cropflow.predict.testing import smooth_noise, tiny_bundle
from cropflow.predict.testing import write_cube as write_test_cube
from cropflow.products.build import build_products
from cropflow.stac.profiles import get_profile

pytestmark = pytest.mark.faults

CLASSES = ClassMap(classes=[ClassDef(id=1, name="a"), ClassDef(id=2, name="b")])
MODEL = {"name": "tempcnn", "conv_widths": [4], "kernel_size": 3, "hidden_size": 8}


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system."""
    target = tmp_path / "small"
    _mount(target, "size=2m")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    import shutil

    free = shutil.disk_usage(folder).free
    (folder / "ballast").write_bytes(b"\0" * max(free - leave, 0))


def _prediction(tmp_path: Path) -> object:
    rng = np.random.default_rng(0)
    cube = write_test_cube(
        tmp_path / "c.zarr",
        {b: smooth_noise((2, 64, 64), rng) for b in ("nir", "red")},
        ["2021-05-01", "2021-06-01"],
        Affine(10, 0, 300000, 0, -10, 4600000),
        "EPSG:32631",
    )
    params = PredictParams(cube=str(cube), key="p", executor="local", tile_size=32)
    return predict(params, tiny_bundle(MODEL, ["nir", "red"], 2, CLASSES, "pixel", seed=1))


def test_a_full_disk_while_building_a_cube_is_one_clear_error(
    small_disk: Path, tmp_path: Path, client: Client
) -> None:
    sc = make_scene(tmp_path / "s", n_dates=6, shape=(192, 192), seed=3)
    params = CubeParams(
        bands=["red", "nir"], chunk_size=64, compressor="zstd",
        grid=GridParams(crs=sc.crs, resolution=10, bounds=sc.bounds),
    )  # fmt: skip
    plan = plan_cube(sc.items, get_profile("local-demo"), params)
    _fill(small_disk, leave=96 * 1024)
    target = small_disk / "cubes" / "c.zarr"
    with pytest.raises(StorageError) as err:
        write_cube(plan, target, client=client)
    message = str(err.value)
    assert "no space left" in message and str(small_disk) in message
    assert "CROPFLOW_WORKDIR" in (err.value.hint or "")
    assert not target.exists(), "no cube is published half-written"


def test_a_full_disk_while_publishing_keeps_the_previous_products(
    small_disk: Path, tmp_path: Path
) -> None:
    prediction = _prediction(tmp_path)
    dest = small_disk / "products" / "region"
    first = build_products(prediction, dest)  # type: ignore[arg-type]
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    _fill(small_disk, leave=4096)
    with pytest.raises(StorageError, match="no space left") as err:
        build_products(prediction, dest)  # type: ignore[arg-type]
    assert str(small_disk) in str(err.value)
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert Path(first.catalog).exists()
    assert not list(dest.parent.glob(".region.staging-*")), "no staging folder left"


def test_a_read_only_folder_keeps_the_previous_products(tmp_path: Path) -> None:
    prediction = _prediction(tmp_path)
    disk = tmp_path / "ro"
    _mount(disk, "size=8m")
    try:
        dest = disk / "products" / "region"
        build_products(prediction, dest)  # type: ignore[arg-type]
        before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(StorageError, match="read-only") as err:
            build_products(prediction, dest)  # type: ignore[arg-type]
        assert str(disk) in str(err.value) and "writable" in (err.value.hint or "")
        assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_under_a_command_is_one_line_and_exit_2(
    small_disk: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    """The CLI: one line naming the folder and the fix, no traceback."""
    import os
    import sys

    _fill(small_disk, leave=0)
    env = {
        **os.environ,
        "CROPFLOW_WORKDIR": str(small_disk / "work"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    env.pop("PREFECT_API_URL", None)
    (tmp_path / "prefect-home").mkdir()
    catalog = fixtures_dir / "stac" / "site2-2020_jun_jul-35MNM.geojson"
    cli = str(Path(sys.executable).parent / "cropflow")
    done = subprocess.run(
        [cli, "search", "--catalog", str(catalog), "--provider", "planetary-computer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no space left" in lines[0] and str(small_disk) in lines[0]
    assert "Traceback" not in done.stderr
