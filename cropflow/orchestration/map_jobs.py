"""On-demand maps of ``cropflow serve`` as runs of a Prefect deployment (the remap flow)."""

from __future__ import annotations

from typing import Any

from cropflow.orchestration.runs import flow_run_info, trigger
from cropflow.serve.jobs import JobState


class PrefectJobs:
    """:class:`cropflow.serve.jobs.JobBackend` on the Prefect server of ``PREFECT_API_URL``:
    a job is a flow run of the deployment, validated before it is created."""

    def submit(self, deployment: str, parameters: dict[str, Any]) -> str:
        return trigger(deployment, parameters).id

    def state(self, run_id: str) -> JobState:
        info = flow_run_info(run_id)
        return JobState(state=info.state, state_name=info.state_name, message=info.message)
