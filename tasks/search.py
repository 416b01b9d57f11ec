"""Prefect tasks of the STAC search step."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cropflow.orchestration.caching import SEARCH_CACHE_EXPIRATION, stage_task_options
from cropflow.orchestration.retries import network_retry_options
from cropflow.stac.params import SearchParams
from cropflow.stac.search import SearchResult, search_and_save


@task(
    name="stac-search",
    **network_retry_options(),
    **stage_task_options(cache_expiration=SEARCH_CACHE_EXPIRATION),
)
def search_items(params: SearchParams) -> SearchResult:
    """Search the STAC API and save the items; returns the reference to the saved file.

    Transient failures retry with backoff; a re-run within SEARCH_CACHE_EXPIRATION reuses it."""
    return search_and_save(params)


@task(name="stac-search-summary")
def publish_search_summary(result: SearchResult) -> None:
    """Show the search summary as Prefect artifacts: a markdown report and a table of items."""
    create_markdown_artifact(
        markdown=result.summary.to_markdown() + f"\nItemCollection: `{result.uri}`\n",
        key="stac-search-summary",
        description=f"STAC search {result.key}",
    )
    create_table_artifact(
        table=result.summary.table(),
        key="stac-search-items",
        description=f"Items of STAC search {result.key}",
    )
