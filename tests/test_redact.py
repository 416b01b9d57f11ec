"""Secrets never leave: every path by which a credential-bearing URL could leave the process
(logs, error messages, saved searches, MLflow, Prefect parameters, artifacts and results)
shows it masked, and signed hrefs have an unsigned identity.

Each test gives a URL holding a secret and asserts that the secret's text appears nowhere.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from stac_helpers import FaultProxy, read_items, write_catalog
from stack_helpers import free_ports

from cropflow.errors import ConfigError, StacError
from cropflow.orchestration import stack
from cropflow.redact import (
    LOG_FILTER,
    MASK,
    find_credentials,
    install_log_redaction,
    is_signed,
    redact,
    redact_data,
    unsigned_href,
)
from cropflow.settings import Settings, StackSettings, get_settings
from cropflow.stac.params import SearchParams
from cropflow.stac.search import search, search_and_save
from cropflow.stac.server import LocalStacServer, free_port

SECRET = "S3CRETpw"
TOKEN = "T0KENvalue"
USER = "alice"
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()  # what requests sends
SITE2 = "site2-2020_jun_jul-35MNM.geojson"
PC = "planetary-computer"
INSIDE_35MNM = "27.3,-7.9,27.5,-7.7"
SAS = f"st=2025-01-01T00%3A00%3A00Z&se=2025-01-02T00%3A00%3A00Z&sp=rl&sv=2024-05-04&sr=c&skoid=9c8&sig={TOKEN}%3D"  # noqa: E501
BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/35/M/NM/B04.tif"


def with_credentials(url: str) -> str:
    """``url`` with ``alice:<SECRET>@`` userinfo and a ``token=<TOKEN>`` query."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USER}:{SECRET}@{rest}?token={TOKEN}"


def assert_clean(text: str | bytes, where: str) -> None:
    data = text.decode(errors="replace") if isinstance(text, bytes) else text
    for secret in (SECRET, TOKEN, BASIC):
        assert secret not in data, f"{secret!r} leaked into {where}:\n{data[:2000]}"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "1")
    monkeypatch.setenv("CROPFLOW_STAC__BACKOFF_S", "0.01")
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "5")


@pytest.fixture(scope="module")
def site2_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    collection, items = write_catalog(tmp_path_factory.mktemp("site2"), read_items(SITE2))
    with LocalStacServer(collection, items) as server:
        yield server.url


# --- The helper itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:t0k@mlflow:5000", "http://***@mlflow:5000"),
        ("https://t0ken@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://u:p@ss@host/x?y=1", "http://***@host/x?y=1"),  # '@' in the password
        (
            "API request to http://alice:pw@127.0.0.1:9/api/2.0/x failed",
            "API request to http://***@127.0.0.1:9/api/2.0/x failed",
        ),
        (f"{BLOB}?{SAS}", f"{BLOB}?st=***&se=***&sp=***&sv=***&sr=***&skoid=***&sig=***"),
        (
            "https://b.s3.amazonaws.com/k.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=beef&X-Amz-Security-Token=tok&versionId=3",
            "https://b.s3.amazonaws.com/k.tif?X-Amz-Algorithm=***&X-Amz-Credential=***"
            "&X-Amz-Signature=***&X-Amz-Security-Token=***&versionId=3",
        ),
        (
            "https://s.googleapis.com/b/o?X-Goog-Signature=ab12&alt=media",
            "https://s.googleapis.com/b/o?X-Goog-Signature=***&alt=media",
        ),
        (
            "https://api.example.org/stac/search?collections=a&access_token=x1&apikey=k&key=v",
            "https://api.example.org/stac/search?collections=a&access_token=***&apikey=***&key=***",
        ),
        (
            "GET https://x/y Headers: {'User-Agent': 'py', 'Authorization': 'Basic YWJj'}",
            "GET https://x/y Headers: {'User-Agent': 'py', 'Authorization': '***'}",
        ),
        ("Ocp-Apim-Subscription-Key: abc123", "Ocp-Apim-Subscription-Key: ***"),
    ],
)
def test_redact_masks_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected, "idempotent"


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/work/mlflow/mlflow.db",
        "file:///data/a@b.tif",
        "https://example.org/a@b?collections=x&limit=10",
        "write to bob@example.org; key: the cube key=abc",
        "s3://bucket/key.tif",
        "",
    ],
)
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_unsigned_href_is_the_identity_of_a_signed_href() -> None:
    first = f"{BLOB}?{SAS}"
    rotated = first.replace(TOKEN, "AnotherSig").replace("2025-01-02", "2025-02-02")
    assert unsigned_href(first) == unsigned_href(rotated) == BLOB
    assert is_signed(first) and not is_signed(BLOB)
    assert unsigned_href(BLOB) == BLOB
    kept = "https://h/x.tif?format=cog&X-Amz-Signature=ab&X-Amz-Credential=c&page=2#frag"
    assert unsigned_href(kept) == "https://h/x.tif?format=cog&page=2#frag", "others kept, in order"
    assert unsigned_href("https://u:p@h/x.tif") == "https://h/x.tif"
    assert unsigned_href("/data/x.tif") == "/data/x.tif"
    assert unsigned_href("file:///data/x.tif") == "file:///data/x.tif"


def test_redact_data_and_find_credentials_walk_json() -> None:
    data = {"a": [1, with_credentials("http://h")], "b": {"c": "plain", "d": (f"{BLOB}?{SAS}",)}}
    assert_clean(json.dumps(redact_data(data)), "redact_data")
    assert redact_data(data)["b"]["c"] == "plain" and redact_data(data)["a"][0] == 1
    assert list(find_credentials(data)) == ["a[1]", "b.d[0]"]
    assert list(find_credentials(SearchParams(api_url=with_credentials("http://h")))) == ["api_url"]


# --- Logs -----------------------------------------------------------------------------------


def test_log_records_are_redacted_on_every_handler(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A library logger with its own handler (as MLflow's), cropflow's, and a traceback."""
    url = with_credentials("http://127.0.0.1:5000/api")
    library = logging.getLogger("mlflow.cropflow-test")
    handler = logging.StreamHandler()  # stderr, added before the redaction is installed
    library.addHandler(handler)
    library.propagate = False
    install_log_redaction()
    assert LOG_FILTER in handler.filters
    try:
        with caplog.at_level(logging.INFO):
            library.warning("request to %s failed", url)
            logging.getLogger("cropflow.test").info("tracking at %s", url)
            try:
                raise RuntimeError(f"cannot reach {url}")
            except RuntimeError:
                logging.getLogger("cropflow.test").exception("failed")
            logging.getLogger("urllib3.test").debug("Headers: {'Authorization': 'Basic %s'}", BASIC)
    finally:
        library.removeHandler(handler)
        library.propagate = True
    out, err = capfd.readouterr()
    assert "request to http://***@127.0.0.1:5000/api?token=***" in err
    assert_clean(out + err, "stderr/stdout")
    assert_clean(caplog.text, "captured log records")
    assert "RuntimeError: cannot reach http://***@" in caplog.text


# --- STAC search: messages, logs, saved files -----------------------------------------------


def test_search_saves_logs_and_reports_no_credential(
    site2_api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_credentials(site2_api)
    with caplog.at_level(logging.DEBUG):  # pystac-client logs every request with its headers
        result = search_and_save(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM), tmp_path)
    assert result.n_items == 13
    items, record = result.path.read_bytes(), result.path.with_name("search.json").read_bytes()
    assert_clean(items, "items.json")
    assert_clean(record, "search.json")
    assert_clean(result.model_dump_json(), "the SearchResult")
    assert_clean(result.summary.to_markdown(), "the summary artifact")
    assert_clean(caplog.text, "logs")
    saved = json.loads(items)
    assert saved["cropflow:search"]["api_url"] == redact(url.rstrip("/"))
    root = next(li for li in saved["features"][0]["links"] if li["rel"] == "root")
    assert root["href"] == site2_api, "links saved unsigned, still usable"
    assert MASK in caplog.text, "the credential-bearing URL was logged, masked"


def test_search_errors_name_the_api_without_its_credentials(site2_api: str) -> None:
    dead = with_credentials(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StacError, match="could not be reached") as err:
        search(SearchParams(api_url=dead, provider=PC, aoi=INSIDE_35MNM))
    assert_clean(str(err.value), "the unreachable-API error")
    assert "http://***@127.0.0.1:" in str(err.value)
    proxy = FaultProxy(site2_api, always=503)
    with proxy.running() as url, pytest.raises(StacError, match="HTTP 503") as failing:
        search(SearchParams(api_url=with_credentials(url), provider=PC, aoi=INSIDE_35MNM))
    assert_clean(str(failing.value), "the HTTP 503 error")
    with pytest.raises(ConfigError, match="is not an http") as bad:
        search(SearchParams(api_url=with_credentials("ftp://host"), provider=PC, aoi="1,2,3,4"))
    assert_clean(str(bad.value), "an error before any request")


# --- Prefect: parameters refused, settings-derived credentials never stored -----------------


def test_prefect_runs_store_no_credential(
    prefect_harness: None, site2_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The search flow run ad hoc (as `cropflow run search`): the API URL with credentials comes
    from the settings; the run's parameters, artifacts and persisted results hold none. The
    same URL given as a parameter is refused before a run is created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowFilter,
        FlowFilterName,
    )

    from cropflow.orchestration.caching import results_dir
    from cropflow.orchestration.runs import run_flow

    monkeypatch.setenv("CROPFLOW_STAC__API_URL", with_credentials(site2_api))
    result = run_flow("search", {"provider": PC, "aoi": INSIDE_35MNM})
    assert result.n_items == 13
    assert_clean(result.model_dump_json(), "the flow's result")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["search"])), limit=200
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["stac-search-summary", "stac-search-items"])
            ),
            limit=200,
        )
    assert runs, "the search flow ran on the API"
    for run in runs:
        assert_clean(json.dumps(run.parameters, default=str), "flow run parameters")
        assert_clean(str(run.state.message if run.state else ""), "state message")
    texts = [json.dumps(a.data, default=str) + str(a.description) for a in artifacts]
    assert any("STAC search" in t for t in texts)
    assert_clean("\n".join(texts), "artifacts")
    for path in results_dir().rglob("*"):
        if path.is_file():
            assert_clean(path.read_bytes(), f"persisted result {path.name}")

    with pytest.raises(ConfigError, match=r"params\.api_url .*hold a credential") as err:
        run_flow("search", {"api_url": with_credentials(site2_api), "aoi": INSIDE_35MNM})
    assert_clean(str(err.value), "the refusal")


def test_cli_stage_options_refuse_credentials(site2_api: str) -> None:
    """`cropflow search --api-url URL` would make URL a flow run parameter: refused, exit 2."""
    from typer.testing import CliRunner

    from cropflow.cli import app

    out = CliRunner().invoke(
        app, ["search", "--api-url", with_credentials(site2_api), "--aoi", INSIDE_35MNM]
    )
    assert out.exit_code == 2, out.output
    assert "api_url hold a credential" in out.output and "CROPFLOW_STAC__API_URL" in out.output
    assert_clean(out.output, "the CLI's message")


# --- MLflow: a server behind a URL with credentials -----------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stack's MLflow server (a real `mlflow server`) on a free port; its URL."""
    (port,) = free_ports(1)
    settings = Settings(
        workdir=tmp_path_factory.mktemp("mlflow-work"), stack=StackSettings(mlflow_port=port)
    )
    service = next(s for s in stack.plan(settings) if s.name == "mlflow")
    try:
        stack.up(settings, [service])
        yield service.url
    finally:
        stack.down(settings)


def test_mlflow_with_credentials_in_the_tracking_uri(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Runs logged through a tracking URI with user:token@: nothing printed or logged shows
    the token (MLflow prints "View run ... at <URI>" on every finished run), results carry the
    masked URI, and params/tags that held one are stored masked."""
    from cropflow.train.registry import RunLogger, mlflow_target

    with_userinfo = mlflow_server.replace("://", f"://{USER}:{SECRET}@")
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", with_userinfo)
    monkeypatch.setenv("CROPFLOW_MLFLOW__EXPERIMENT", "redaction-test")
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    target = mlflow_target()
    assert target.tracking_uri == mlflow_server.replace("://", "://***@")
    run = RunLogger.start(target, None, "redaction", {"source": with_credentials("http://h")})
    run.log_params({"api_url": with_credentials("http://stac.example.org")})
    run.set_tags({"cropflow.error": f"cannot reach {with_credentials('http://h')}"})
    run.log_dict({"tracking": get_settings().mlflow_tracking_uri}, "settings.json")
    run.finish()
    stored = target.client.get_run(run.run_id)
    out, err = capfd.readouterr()
    assert_clean(out + err, "stdout/stderr")
    assert_clean(json.dumps(stored.data.params), "MLflow params")
    assert_clean(json.dumps(stored.data.tags), "MLflow tags")
    assert stored.data.params["api_url"].startswith("http://***@stac.example.org")


def test_unreachable_mlflow_error_has_no_credentials(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from cropflow.train.registry import mlflow_target

    monkeypatch.setenv(
        "CROPFLOW_MLFLOW__TRACKING_URI", f"http://{USER}:{SECRET}@127.0.0.1:{free_port()}"
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(ConfigError, match="is not usable") as err:
        mlflow_target()
    assert_clean(str(err.value), "the error")
    assert err.value.__cause__ is None and err.value.__suppress_context__, "no chained URL"
    assert "http://***@127.0.0.1:" in str(err.value)
    out, errout = capfd.readouterr()
    assert_clean(out + errout, "stdout/stderr")
