"""The operator's view, in a real browser: the Prefect UI of a stack on non-default ports.

``cropflow stack up`` on free ports (never 4200/5000), ``deploy_all`` of the project's own
flows and region files, the tiny demo region served by the stack's STAC API. Headless
Chromium opens the Prefect UI, finds the ``retrain/demo`` deployment, fills the number of
epochs in its run form and submits it; the run completes on the stack's worker. Then the
MLflow registry page and the remap's quicklook are opened too. Screenshots are saved under
``test-artifacts/operator/`` (tests/browser_helpers.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser_helpers import artifacts_dir, browser_page
from stack_helpers import free_ports

from cropflow.orchestration import stack
from cropflow.settings import Settings, get_settings

pytestmark = pytest.mark.slow

EPOCHS = 2
TOKEN = "operator-token"
#: Console errors of the two UIs themselves, whatever the deployment: Prefect's UI asks for a
#: favicon and an icon ("undefined.svg") it does not ship; MLflow's asks for the current user,
#: an endpoint of its auth app only. Any other console error fails the test.
IGNORED_CONSOLE = ("/favicon.ico)", "/ico/undefined.svg)", "/mlflow/users/current)")


def test_stack_server_tells_the_ui_its_own_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI reads the API's address from /ui-settings: the stack sets it from its port."""
    monkeypatch.setenv("CROPFLOW_STACK__PREFECT_PORT", "34200")
    server = next(s for s in stack.plan(get_settings()) if s.name == "prefect-server")
    assert server.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:34200/api"
    assert server.env["PREFECT_UI_URL"] == "http://127.0.0.1:34200"
    monkeypatch.setenv("CROPFLOW_STACK__HOST", "0.0.0.0")  # a browser cannot call 0.0.0.0
    server = next(s for s in stack.plan(get_settings()) if s.name == "prefect-server")
    assert server.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:34200/api"


@dataclass
class OperatorStack:
    settings: Settings
    ui: str
    mlflow: str
    maps: str
    shots: Path
    console_errors: list[str]

    @property
    def api(self) -> str:
        return f"{self.ui}/api"


@pytest.fixture(scope="module")
def operator(session_root: Path) -> Iterator[OperatorStack]:
    """The whole stack on free ports, the project's deployments, the tiny demo region."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cropflow.demo.area import generate_demo
    from cropflow.demo.config import DemoConfig
    from cropflow.orchestration.deploy import deploy_all

    root = Path(tempfile.mkdtemp(prefix="operator-", dir=session_root))
    ports = free_ports(6)
    assert not {4200, 5000, 8786, 8787, 8082, 8090} & set(ports)
    prefect, mlflow, dask, dashboard, stac, maps = ports
    env = {
        "CROPFLOW_WORKDIR": str(root / "work"),
        "CROPFLOW_STACK__PREFECT_PORT": str(prefect),
        "CROPFLOW_STACK__MLFLOW_PORT": str(mlflow),
        "CROPFLOW_STACK__DASK_PORT": str(dask),
        "CROPFLOW_STACK__DASK_DASHBOARD_PORT": str(dashboard),
        "CROPFLOW_STACK__STAC_PORT": str(stac),
        "CROPFLOW_SERVE__PORT": str(maps),
        "CROPFLOW_SERVE__TOKEN": TOKEN,
        "CROPFLOW_STACK__START_TIMEOUT_S": "180",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = get_settings()
        generate_demo(settings.demo_dir, DemoConfig.tiny())
        ui = f"http://127.0.0.1:{prefect}"
        try:
            stack.up(settings)
            with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}):
                deploy_all(zombie_after_s=None)
                yield OperatorStack(
                    settings,
                    ui,
                    f"http://127.0.0.1:{mlflow}",
                    f"http://127.0.0.1:{maps}",
                    artifacts_dir("operator"),
                    [],
                )
        finally:
            stack.down(settings)


def _deployment_id(name: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_deployment_by_name(name).id)


def _run_ids(deployment_id: str) -> list[str]:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)]))
        )
    return [str(r.id) for r in runs]


def _property(page: Any, label: str) -> Any:
    """The form field whose label starts with ``label`` (the innermost one)."""
    span = page.locator(".schema-form-property__label", has_text=label).first
    return span.locator(
        "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]"
    )


def test_ui_settings_report_the_stack_port(operator: OperatorStack) -> None:
    settings = httpx.get(f"{operator.ui}/ui-settings", timeout=10).json()
    assert settings["api_url"] == operator.api


def test_retrain_form_in_the_prefect_ui_runs_on_the_worker(operator: OperatorStack) -> None:
    from mlflow import MlflowClient

    from cropflow.orchestration.runs import wait_for_run

    retrain_id = _deployment_id("retrain/demo")
    shots = operator.shots
    with browser_page(operator.console_errors) as page:
        page.goto(f"{operator.ui}/deployments", wait_until="networkidle")
        assert "Oops" not in page.inner_text("body")
        page.locator(f'a[href="/deployments/deployment/{retrain_id}"]').click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("link", name="Custom run").click()
        page.wait_for_url("**/run**")
        epochs = _property(page, "Epochs")
        epochs.wait_for()
        page.screenshot(path=str(shots / "prefect-retrain-form.png"))

        # What people change comes first; the region, set by the deployment, by name, last.
        region = _property(page, "Region")
        region.scroll_into_view_if_needed()
        assert epochs.bounding_box()["y"] < _property(page, "Seed").bounding_box()["y"]
        assert _property(page, "Seed").bounding_box()["y"] < region.bounding_box()["y"]
        region_values = region.locator("input, textarea").evaluate_all(
            "els => els.map(e => e.value)"
        )
        assert region_values == ["demo"], region_values

        epochs.scroll_into_view_if_needed()
        epochs.get_by_role("button", name="int", exact=True).click()
        epochs.locator("input").fill(str(EPOCHS))
        # Prefect's API answers 503 to an SQLite write it may retry ("database is locked" on
        # the embedded server; its Python client retries those, the UI shows an error and
        # keeps the form): submit again, as the person at the form would.
        for _attempt in range(3):
            seen = len(operator.console_errors)
            with page.expect_response(lambda r: "create_flow_run" in r.url) as answer:
                page.get_by_role("button", name="Submit").click()
            if answer.value.status != 503:
                break
            page.wait_for_timeout(1000)  # the UI logs the failed request: not an error of ours
            del operator.console_errors[seen:]
        assert answer.value.ok, (answer.value.status, answer.value.text())
        page.wait_for_url(f"**/deployments/deployment/{retrain_id}?tab=Runs")
        (run_id,) = _run_ids(retrain_id)  # the form created exactly one run

        done = wait_for_run(run_id, timeout_s=600, poll_s=1)
        assert done.state == "COMPLETED", done.message
        assert done.deployment == "retrain/demo"
        assert done.parameters["params"]["region"] == "demo"
        assert done.parameters["params"]["train"]["epochs"] == EPOCHS

        page.goto(f"{operator.ui}/runs/flow-run/{run_id}", wait_until="networkidle")
        page.get_by_text("Completed").first.wait_for()
        page.screenshot(path=str(shots / "prefect-retrain-run.png"))

        # The registry, described: what the model is and why this version is champion.
        client = MlflowClient(tracking_uri=operator.mlflow, registry_uri=operator.mlflow)
        model = client.get_registered_model("cropflow-demo")
        assert "region **demo**" in (model.description or "")
        version = client.get_model_version_by_alias("cropflow-demo", "champion")
        described = version.description or ""
        assert described.startswith("**champion**: no champion yet"), described
        assert "Validation macro_f1" in described and "- Region: demo" in described
        assert version.tags["cropflow.region"] == "demo"
        assert int(client.get_run(str(version.run_id)).data.params["epochs"]) == EPOCHS
        page.goto(f"{operator.mlflow}/#/models/cropflow-demo", wait_until="load")
        page.get_by_text("region demo", exact=False).first.wait_for()
        page.screenshot(path=str(shots / "mlflow-registered-model.png"))
    assert _ours(operator.console_errors) == [], operator.console_errors


def _ours(errors: list[str]) -> list[str]:
    return [e for e in errors if not any(i in e for i in IGNORED_CONSOLE)]


def test_remap_products_are_published_and_their_quicklook_renders(
    operator: OperatorStack,
) -> None:
    """After the retrain (previous test), the remap of the region on the worker."""
    import xarray as xr

    from cropflow.orchestration.runs import trigger, wait_for_run

    t0 = time.perf_counter()
    run = trigger("remap-region/demo")
    done = wait_for_run(run.id, timeout_s=600, poll_s=1)
    assert done.state == "COMPLETED", done.message
    print(f"remap on the worker: {time.perf_counter() - t0:.1f} s")
    quicklooks = list(operator.settings.workdir.glob("products/**/quicklook.png"))
    assert len(quicklooks) == 1, quicklooks
    # Every store the chain published opens without the "consolidated metadata" warning.
    stores = [
        *operator.settings.workdir.glob("cubes/*.zarr"),
        *operator.settings.workdir.glob("training-sets/*.zarr"),
        *operator.settings.workdir.glob("predictions/**/*.zarr"),
    ]
    assert len(stores) >= 3, stores
    for store in stores:
        meta = json.loads((store / "zarr.json").read_text())
        assert meta.get("consolidated_metadata"), f"{store} has no consolidated metadata"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            xr.open_zarr(store).close()
        assert not [w for w in caught if "consolidated" in str(w.message)], store
    with browser_page(operator.console_errors) as page:
        page.goto(quicklooks[0].resolve().as_uri())
        width = page.evaluate("document.images[0].naturalWidth")
        assert width > 0
        page.locator("img").screenshot(path=str(operator.shots / "products-quicklook.png"))


def _interior_pixels(path: Path, n: int) -> list[tuple[float, float, int]]:
    """``n`` pixels (lon, lat, value) of a class map whose 5 x 5 neighbourhood is one class."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(path) as src:
        data = src.read(1)
        to_lonlat = Transformer.from_crs(src.crs, 4326, always_xy=True)
        found: list[tuple[float, float, int]] = []
        seen: set[int] = set()
        for row in range(2, data.shape[0] - 2, 3):
            for col in range(2, data.shape[1] - 2, 3):
                block = data[row - 2 : row + 3, col - 2 : col + 3]
                value = int(data[row, col])
                if value in seen or value in (0, 255) or not (block == value).all():
                    continue
                lon, lat = to_lonlat.transform(*src.xy(row, col))
                found.append((lon, lat, value))
                seen.add(value)
                if len(found) == n:
                    return found
    return found


def test_web_map_shows_the_map_answers_clicks_and_runs_a_job(operator: OperatorStack) -> None:
    """The map server of the stack: the demo map, its legend colours at known class
    locations, the point query, the area table, and an on-demand map from the page's form."""
    import io

    from PIL import Image

    from cropflow.serve.catalog import read_table

    products = operator.settings.products_dir / "demo"
    legend = {c["value"]: c for c in httpx.get(f"{operator.maps}/maps/demo/legend").json()}
    pixels = _interior_pixels(products / "class_map.tif", 4)
    assert len(pixels) == 4
    errors: list[str] = []
    with browser_page(errors) as page:
        page.goto(f"{operator.maps}/", wait_until="load")
        page.wait_for_selector("body[data-ready=true][data-loaded-class_map=demo]")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(operator.shots / "web-map.png"))
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        box = page.locator("#map").bounding_box()
        for lon, lat, value in pixels:
            xy = page.evaluate(f"state.map.latLngToContainerPoint([{lat}, {lon}])")
            x, y = round(box["x"] + xy["x"]), round(box["y"] + xy["y"])
            color = legend[value]["color"].lstrip("#")
            expected = [int(color[i : i + 2], 16) for i in (0, 2, 4)]
            assert np.abs(shot[y, x].astype(int) - expected).max() <= 3, (value, shot[y, x])
            page.mouse.click(x, y)
            page.wait_for_function(
                f"document.querySelector('#point-class')?.textContent === '{legend[value]['name']}'"
            )
        rows = page.locator("#areas tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        table = read_table(products / "class_area.csv")
        assert [r[0] for r in rows] == [t["class_name"] for t in table]
        assert [r[1] for r in rows] == [f"{float(t['area_ha']):.2f}" for t in table]

        # The season's true-colour composite under the same switcher.
        assert "truecolor" in httpx.get(f"{operator.maps}/maps/demo").json()["layers"]
        page.get_by_label("True colour").check()
        page.wait_for_selector("body[data-loaded-truecolor=demo]")
        page.screenshot(path=str(operator.shots / "web-map-truecolor.png"))
        page.get_by_label("Class map").check()
        page.wait_for_selector("body[data-loaded-class_map=demo]")

        # An on-demand map of a part of the region, from the page's form.
        page.get_by_role("button", name="Draw AOI").click()
        west, south, east, north = httpx.get(f"{operator.maps}/maps/demo").json()["bbox"]
        corners = [
            (west + 0.3 * (east - west), south + 0.3 * (north - south)),
            (west + 0.7 * (east - west), south + 0.7 * (north - south)),
        ]
        for lon, lat in corners:
            xy = page.evaluate(f"state.map.latLngToContainerPoint([{lat}, {lon}])")
            page.mouse.click(box["x"] + xy["x"], box["y"] + xy["y"])
        page.fill("input[name=start]", "2024-03-01")
        page.fill("input[name=end]", "2024-10-31")
        page.fill("input[name=token]", TOKEN)
        page.get_by_role("button", name="Request map").click()
        page.wait_for_function(
            "/Completed|Failed|Crashed|error/i.test(document.querySelector('#jobstate').textContent)",
            timeout=600_000,
        )
        state_text = page.inner_text("#jobstate")
        assert "Completed" in state_text, state_text
        page.wait_for_selector("body[data-region^=aoi-][data-loaded-class_map^=aoi-]")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(operator.shots / "web-map-job.png"))
        job_region = page.eval_on_selector("#region", "e => e.value")
        job_rows = page.locator("#areas tbody tr").count()
    assert _ours(errors) == [], errors

    job_id = job_region.removeprefix("aoi-")
    status = httpx.get(f"{operator.maps}/maps/jobs/{job_id}").json()
    assert (
        status["done"] and status["state"] == "COMPLETED" and status["map"] == f"/maps/{job_region}"
    )
    # The identical request reuses the finished job and its map; tiles of the new map render.
    again = httpx.post(
        f"{operator.maps}/maps",
        json=status["request"],
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert again.status_code == 202 and again.json()["id"] == job_id and again.json()["done"]
    new_map = httpx.get(f"{operator.maps}/maps/{job_region}").json()
    assert new_map["model"]["name"] == "cropflow-demo"
    # Its extent is the drawn AOI (snapped to the 10 m grid), inside the demo map.
    (lon0, lat0), (lon1, lat1) = corners
    for got, want in zip(new_map["bbox"], [lon0, lat0, lon1, lat1], strict=True):
        assert abs(got - want) < 0.0005, (new_map["bbox"], corners)
    new_areas = read_table(operator.settings.products_dir / job_region / "class_area.csv")
    assert job_rows == len(new_areas)
    assert sum(float(r["area_ha"]) for r in new_areas) < sum(float(t["area_ha"]) for t in table)
