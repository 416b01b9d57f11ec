"""Orchestration overhead of a remap: the ``remap-region`` flow against the same library calls
without Prefect, side by side in one process.

Setup (not timed): generate the demo region (``--size``), serve it over HTTP, and train and
register a champion with the library (:func:`cropflow.train.run_training`, ``--epochs``).
Then, ``--repeats`` times in alternation:

* **plain**: the calls the remap's tasks wrap, in order: search and save, plan, write the
  cube, pin the champion, predict, build and publish the products;
* **flow**: :func:`flows.remap.remap_region` on Prefect's ephemeral API (region lock, cached
  stage tasks with persisted results, artifacts, progress artifacts).

Before each repetition the cube, prediction and products are deleted, so both do the full
work (the flow's cached results then name deleted outputs and are computed again). Two
figures, medians over the repeats: (flow - plain) / flow, between runs, which the run-to-run
noise of a 2-core machine (seconds) swamps; and the in-run share: the flow run's time outside
its task runs' Running time, over the flow run's time (engine, state changes, lock, result
persistence, cache keys), measured within one run. Goal (issue 7): under 5 %.

Run: ``python -m benchmarks.bench_remap_overhead [WORKDIR] [--size default|tiny]
[--repeats N] [--epochs N]``; prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

#: The outputs a remap writes; deleted before every timed run.
OUTPUTS = ("cubes", "predictions", "products")


def setup(size: str, epochs: int) -> Any:
    """Region, search and cube, a training set and a registered champion; the region config."""
    from cropflow.chain import (
        cube_params_for,
        demo_config,
        embedded_demo_region,
        labels_for,
        search_params_for,
    )
    from cropflow.cube import CubeParams, plan_from_search, write_cube
    from cropflow.demo import generate_demo
    from cropflow.labels import TrainingSetOptions, TrainingSetParams, build_training_set
    from cropflow.settings import get_settings
    from cropflow.stac.search import search_and_save
    from cropflow.train import TrainOptions, TrainParams, run_training

    generate_demo(get_settings().demo_dir, demo_config(size, None))
    region = embedded_demo_region()
    search = search_and_save(search_params_for(region))
    plan = plan_from_search(search.uri, search.provider, cube_params_for(region, CubeParams()))
    cube = write_cube(plan, None)
    options = TrainingSetOptions.model_validate({"splits": {"block_size_px": 16}})
    training_set = build_training_set(TrainingSetParams.of(options, cube.uri, labels_for(region)))
    run_training(TrainParams.of(TrainOptions(epochs=epochs), training_set.uri, region.model_name()))
    return region


def plain(region: Any) -> float:
    """The remap's library calls without Prefect; seconds."""
    from cropflow.chain import cube_params_for, search_params_for
    from cropflow.cube import CubeParams, plan_from_search, write_cube
    from cropflow.predict import PredictOptions, PredictParams, predict
    from cropflow.products import build_products
    from cropflow.stac.search import search_and_save

    t0 = time.perf_counter()
    search = search_and_save(search_params_for(region))
    plan = plan_from_search(search.uri, search.provider, cube_params_for(region, CubeParams()))
    cube = write_cube(plan, None)
    params = PredictParams.of(
        PredictOptions(), cube.uri, region.name, region.model_alias, region.model_name()
    )
    build_products(predict(params.pinned()))
    return time.perf_counter() - t0


def with_flow(region: Any) -> tuple[float, float]:
    """The remap-region flow in this process (ephemeral API): (seconds, Prefect's share within
    the run: the flow run's time outside its task runs' Running time, over the flow run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.remap import RemapParams, remap_region

    t0 = time.perf_counter()
    state = remap_region(RemapParams(region=region), return_state=True)
    seconds = time.perf_counter() - t0
    run_id = state.state_details.flow_run_id
    if run_id is None:
        raise RuntimeError(f"the remap returned no flow run: {state}")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    if run.start_time is None or run.end_time is None:
        raise RuntimeError(f"flow run {run_id} did not finish: {state}")
    wall = (run.end_time - run.start_time).total_seconds()
    in_tasks = sum(t.total_run_time.total_seconds() for t in tasks)
    return seconds, (wall - in_tasks) / wall


def forget_outputs(workdir: Path) -> None:
    for name in OUTPUTS:
        shutil.rmtree(workdir / name, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", type=Path)
    parser.add_argument("--size", choices=("default", "tiny"), default="default")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-remap-"))).resolve()
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from cropflow.settings import get_settings

    t0 = time.perf_counter()
    region = setup(args.size, args.epochs)
    setup_s = time.perf_counter() - t0
    with_flow(region)  # warm-up: the ephemeral API starts, modules are imported
    rows: list[tuple[float, float, float]] = []
    for _ in range(args.repeats):
        forget_outputs(get_settings().workdir)
        a = plain(region)
        forget_outputs(get_settings().workdir)
        b, inside = with_flow(region)
        rows.append((a, b, inside))
    print(f"## Orchestration overhead of a remap (`--size {args.size}`)\n")
    print(f"{platform.node()}, {os.cpu_count()} cores; setup {setup_s:.0f} s.\n")
    print("| repeat | plain calls (s) | flow (s) | (flow - plain) / flow | in-run share |")
    print("|---|---|---|---|---|")
    for i, (a, b, inside) in enumerate(rows, 1):
        print(f"| {i} | {a:.2f} | {b:.2f} | {(b - a) / b:+.1%} | {inside:.1%} |")
    between = statistics.median((b - a) / b for a, b, _ in rows)
    within = statistics.median(inside for _, _, inside in rows)
    print(f"| median | | | {between:+.1%} | **{within:.1%}** (goal < 5 %) |")


if __name__ == "__main__":
    main()
