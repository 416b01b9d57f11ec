"""Nothing cropflow starts listens beyond loopback unless a setting says so.

The running stack's sockets are checked in tests/test_stack.py (it starts the whole stack once);
here: the Dask LocalCluster of a CLI cube build, with Prefect's API, as the cube flow runs it,
and the command lines of the stack's services.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from net_helpers import beyond_loopback, listeners
from prefect import flow, task

from cropflow.cube.cluster import dask_client, local_cluster_kwargs
from cropflow.orchestration import stack
from cropflow.settings import DaskSettings, Settings, StackSettings
from flows.cube import cube_task_runner

SMALL = DaskSettings(n_workers=1, threads_per_worker=1, memory_limit="1GiB")


@task
def _one() -> int:
    return 1


@flow(name="loopback-probe")
def _probe(root: int) -> list[str]:
    """While the flow's task runner (the cube flow's LocalCluster) is up: every listener."""
    assert _one.submit().result() == 1  # the cluster runs tasks
    return [str(item) for item in listeners([root])] + [
        "beyond:" + text for text in beyond_loopback(listeners([root]))
    ]


def test_cube_build_cluster_and_prefect_api_listen_on_loopback_only(
    prefect_harness: None,
) -> None:
    """The CLI's cube build: Prefect's API (a child process here) and the DaskTaskRunner's
    LocalCluster (scheduler, its dashboard, nanny, worker and the worker's HTTP server)."""
    found = _probe.with_options(task_runner=cube_task_runner(SMALL))(os.getpid())
    listening = [f for f in found if not f.startswith("beyond:")]
    beyond = [f for f in found if f.startswith("beyond:")]
    # scheduler + dashboard in this process, nanny, worker + its HTTP server, Prefect's API
    assert len(listening) >= 5, listening
    assert beyond == [], f"listening beyond loopback: {beyond}"


def test_dask_client_local_cluster_listens_on_loopback_only() -> None:
    """``dask_client()`` as the cube build calls it without an address: a fresh LocalCluster."""
    with dask_client(SMALL) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        found = listeners([os.getpid()])
        ports = {f.port for f in found}
        info: dict[str, Any] = client.scheduler_info()
        dashboard = client.dashboard_link
        worker_http = [w.get("services", {}).get("dashboard") for w in info["workers"].values()]
    assert beyond_loopback(found) == [], found
    assert all(port in ports for port in worker_http if port), "workers' HTTP servers seen"
    assert dashboard.startswith("http://127.0.0.1:"), dashboard


def test_local_cluster_binds_the_stack_host_setting() -> None:
    kwargs = local_cluster_kwargs(SMALL, host="127.0.0.1")
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["dashboard_address"] == "127.0.0.1:0", "':0' would mean 0.0.0.0"
    assert kwargs["worker_dashboard_address"] is None, "workers' HTTP servers follow their host"
    assert local_cluster_kwargs(SMALL)["host"] == Settings().stack.host == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3"])
def test_every_stack_service_binds_the_one_host_setting(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's command line names its listen address; none is left to a default."""
    monkeypatch.setattr(stack, "_bin", lambda name: name)
    settings = Settings(stack=StackSettings(host=host))
    services = {s.name: s for s in stack.plan(settings)}

    def option(name: str, flag: str) -> str:
        argv = services[name].argv
        return argv[argv.index(flag) + 1]

    assert option("prefect-server", "--host") == host
    assert option("mlflow", "--host") == host
    assert option("dask-scheduler", "--host") == host
    assert option("dask-scheduler", "--dashboard-address").startswith(f"{host}:")
    assert option("dask-workers", "--host") == host
    assert option("dask-workers", "--dashboard-address") == f"{host}:0"
    assert option("stac-api", "--addr").startswith(f"{host}:")
    worker_env = services["prefect-worker"].env
    assert worker_env["PREFECT_WORKER_WEBSERVER_HOST"] == host
    assert worker_env["PREFECT_RUNNER_SERVER_HOST"] == host
