"""The Prefect search flow, run once against a real rustac server under a temporary Prefect API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stac_helpers import read_items, write_catalog

from cropflow.stac.params import SearchParams
from cropflow.stac.search import load_search
from cropflow.stac.server import LocalStacServer

SITE2 = "site2-2020_jun_jul-35MNM.geojson"


@pytest.mark.slow  # the session's Prefect test server takes ~40 s to start on a busy machine
@pytest.mark.usefixtures("prefect_harness")
def test_search_flow_saves_items_and_publishes_the_summary(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from flows.search import search_flow

    site2: list[dict[str, Any]] = read_items(SITE2)
    expected = sorted(d["id"] for d in site2 if d["properties"]["eo:cloud_cover"] <= 10.0)
    with LocalStacServer(*write_catalog(tmp_path / "stac", site2)) as server:
        params = SearchParams(
            api_url=server.url,
            provider="planetary-computer",
            aoi="27.3,-7.9,27.5,-7.7",
            datetime="2020-06-01/2020-07-31",
            max_cloud_cover=10.0,
        )
        state = search_flow(params, return_state=True)
        result = state.result()

    assert result.n_items == len(expected)
    assert sorted(it.id for it in load_search(result.uri)) == expected

    with get_client(sync_client=True) as client:
        keys = ["stac-search-summary", "stac-search-items"]
        # This run's artifacts only: other tests of the session publish the same keys.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
        )
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == set(keys)
    markdown = str(by_key["stac-search-summary"].data)
    assert f"STAC search: {len(expected)} items" in markdown
    assert "35MNM" in markdown and result.uri in markdown
    table = by_key["stac-search-items"].data
    assert str(expected[0]) in str(table)
