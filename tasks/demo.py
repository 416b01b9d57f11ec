"""Prefect task of the demo region: generate it, or reuse it when it is already there."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropflow.demo import DemoConfig, RegionManifest, generate_region
from cropflow.settings import get_settings


# No Prefect cache: generate_region is itself a no-op when the folder already holds the region
# of this config, and it regenerates a region that was deleted (a cache would not).
@task(name="generate-demo-region", cache_policy=NO_CACHE)
def generate_demo_region(
    config: DemoConfig | None = None, out_dir: Path | None = None
) -> RegionManifest:
    """Generate the demo region of ``config`` (default ``DemoConfig()``) into ``out_dir``
    (default: the workdir's ``demo-region``) and return its manifest."""
    return generate_region(out_dir if out_dir is not None else get_settings().demo_dir, config)
