"""The demo leaves no run waiting on a kept server: runs of deployments still scheduled or
pending when it ends are cancelled, each saying why (`flows.demo.cancel_leftover_runs`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def test_leftover_scheduled_runs_are_cancelled_with_the_reason() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Scheduled

    from flows.demo import CANCEL_MESSAGE, cancel_leftover_runs

    @flow(name="demo-leftover-probe")
    def probe() -> None:
        pass

    before = datetime.now(UTC) - timedelta(seconds=1)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(probe)
        deployment_id = client.create_deployment(flow_id=flow_id, name="probe")
        later = client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
        )
        done = client.create_flow_run_from_deployment(deployment_id, state=Completed())
        cancelled = cancel_leftover_runs(before)
        assert cancelled == [later.name]
        state = client.read_flow_run(later.id).state
        assert state.is_cancelled() and state.message == CANCEL_MESSAGE
        assert client.read_flow_run(done.id).state.is_completed()
        # A run created before the demo began is not the demo's: left alone.
        other = client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
        )
        assert cancel_leftover_runs(datetime.now(UTC) + timedelta(minutes=5)) == []
        assert client.read_flow_run(other.id).state.is_scheduled()
