"""Prefect task of the demo region: generate it, or reuse it when it is already there."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropflow.demo import DemoConfig, DemoManifest, generate_demo
from cropflow.settings import get_settings


# No Prefect cache: generate_demo is itself a no-op when the folder already holds the region
# of this config, and it regenerates a region that was deleted (a cache would not).
@task(name="generate-demo", cache_policy=NO_CACHE)
def generate_demo_region(
    config: DemoConfig | None = None, out_dir: Path | None = None
) -> DemoManifest:
    """Generate the demo region of ``config`` (default ``DemoConfig()``) into ``out_dir``
    (default: the workdir's ``demo``) and return its manifest."""
    return generate_demo(out_dir if out_dir is not None else get_settings().demo_dir, config)
