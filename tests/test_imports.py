"""The import rule (docs/ARCHITECTURE.md): the library never imports Prefect, and loads torch,
mlflow, dask and the geospatial stack only where it uses them, so that ``cropflow --help``
starts in well under a second.

* ``cropflow/`` outside ``cropflow/orchestration/``, and ``models/``: no ``prefect`` import
  anywhere (module level or inside functions), checked on the source;
* ``import cropflow.cli`` (every command's options built) and ``import`` of each light
  parameter module load none of the heavy packages, checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "mlflow",
    "dask",
    "distributed",
    "prefect",
    "xarray",
    "rasterio",
    "geopandas",
    "zarr",
    "pandas",
    "odc",
    "pystac_client",
    "sklearn",
    "scipy",
    "matplotlib",
)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _library_files() -> list[Path]:
    wing = ROOT / "cropflow" / "orchestration"
    files = [*(ROOT / "cropflow").rglob("*.py"), *(ROOT / "models").rglob("*.py")]
    return [f for f in files if wing not in f.parents and f.name != "cli.py"]


def test_the_library_never_imports_prefect() -> None:
    offenders = [
        str(f.relative_to(ROOT)) for f in _library_files() if "prefect" in _imported_modules(f)
    ]
    assert offenders == [], (
        f"Prefect belongs in flows/, tasks/, cropflow/orchestration/: {offenders}"
    )


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import cropflow.cli",
        "import cropflow",
        "from cropflow.cube import CubeParams",
        "from cropflow.labels import TrainingSetParams",
        "from cropflow.train import TrainParams",
        "from cropflow.predict import PredictParams",
        "from cropflow.stac.params import SearchParams",
        "from cropflow.chain import DemoParams",
        "from cropflow.regions import get_region; get_region('demo')",
        "from models.configs import parse_model_config; parse_model_config({'name': 'ltae'})",
    ],
)
def test_light_imports_load_no_heavy_package(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_heavy_names_still_import_where_they_are_used() -> None:
    """Lazy package exports: the heavy names load their modules on first use."""
    loaded = _loaded_after("from cropflow.train import load_model; from models import build_model")
    assert {"torch", "mlflow"} <= set(loaded)
    assert "prefect" not in loaded
