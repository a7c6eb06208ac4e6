"""The stack's pieces that need no server: credentials are generated once and kept 0600, the
environment it prints quotes every value for a shell, the work pool's job environment holds
Secret block references (never a value), and the zombie-run automations parse as Prefect's
automation schema."""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path

import yaml

from evergreen.apps import stack


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    first = stack._ensure_credentials(tmp_path)
    again = stack._ensure_credentials(tmp_path)
    assert first == again
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    values = first.values()
    assert len(set(values)) == len(values) and all(len(v) >= 16 for v in values)
    assert first.prefect_auth.startswith(f"{stack.PREFECT_USER}:")


def test_shell_exports_round_trip_through_a_shell(tmp_path: Path) -> None:
    creds = stack.Credentials.generate()
    state = stack.StackState(home=str(tmp_path), cwd=str(tmp_path), ports=dict(stack.DEFAULT_PORTS))
    env = stack.client_env(state, creds)
    parsed = dict(line.removeprefix("export ").split("=", 1) for line in stack.shell_exports(env).splitlines())
    assert {k: shlex.split(v)[0] for k, v in parsed.items()} == env
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{stack.DEFAULT_PORTS['prefect']}/api"
    assert json.loads(env["FSSPEC_S3"]) == {"endpoint_url": state.s3_endpoint, "use_listings_cache": False}
    # The state file's contents hold no secret.
    assert not [v for v in creds.values() if v in json.dumps(state.to_dict())]


def test_the_job_environment_references_secret_blocks_only() -> None:
    env = stack.job_env_template()
    assert env["MLFLOW_TRACKING_PASSWORD"] == "{{ prefect.blocks.secret.evergreen-mlflow-password }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "{{ prefect.blocks.secret.evergreen-s3-secret-access-key }}"
    assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) >= 30  # Prefect's minimum for heartbeats


def test_every_prefect_client_of_the_stack_retries_the_apis_500() -> None:
    """A PostgreSQL restart makes the Prefect API answer 500 for a few seconds: flow runs,
    workers, the server's own actions and shells retry it (Prefect retries 429/502/503 only)."""
    creds = stack.Credentials.generate()
    state = stack.StackState(home="/tmp/x", cwd="/tmp/x", ports=dict(stack.DEFAULT_PORTS))
    for env in (stack.job_env_template(), stack._worker_env(state, creds), stack._prefect_server_env(state, creds),
                stack.client_env(state, creds)):
        assert env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500"


def test_automations_file_is_prefects_automation_schema() -> None:
    from prefect.events.actions import ChangeFlowRunState, RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    raw = yaml.safe_load(stack.AUTOMATIONS_FILE.read_text(encoding="utf-8"))["automations"]
    automations = {a["name"]: AutomationCore.model_validate(a) for a in raw}
    zombie, rerun = automations["evergreen-crash-zombie-runs"], automations["evergreen-rerun-crashed-retrain"]
    assert isinstance(zombie.trigger, EventTrigger) and zombie.trigger.posture == Posture.Proactive
    assert zombie.trigger.after == {"prefect.flow-run.heartbeat"} and zombie.trigger.within.total_seconds() == 90
    silent = automations["evergreen-crash-runs-silent-from-the-start"]
    assert silent.trigger.after == {"prefect.flow-run.Running"} and "prefect.flow-run.heartbeat" in silent.trigger.expect
    # Only deployments' runs (a worker's, which heartbeat): a flow run from a shell sends none.
    assert silent.trigger.match_related.model_dump() == {"prefect.resource.role": "deployment"}
    lost = automations["evergreen-crash-runs-lost-before-running"]
    assert lost.trigger.after == {"prefect.flow-run.Pending"} and "prefect.flow-run.Running" in lost.trigger.expect
    for flow, params in (("monitor", {"config", "batch"}), ("promote", {"config", "version"}), ("canary-review", {"config"})):
        again = automations[f"evergreen-rerun-crashed-{flow}"]
        assert again.trigger.expect == {"prefect.flow-run.Crashed"}
        assert set(again.actions[0].parameters) == params
    assert isinstance(zombie.actions[0], ChangeFlowRunState) and zombie.actions[0].state.value == "CRASHED"
    assert rerun.trigger.expect == {"prefect.flow-run.Crashed"}
    action = rerun.actions[0]
    assert isinstance(action, RunDeployment) and action.source == "inferred"
    assert action.parameters["config"] == "{{ flow_run.parameters.config }}"


def test_postgres_programs_are_found_or_named(monkeypatch) -> None:  # noqa: ANN001
    import pytest

    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    monkeypatch.setattr(stack.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(stack.StackError, match="apt-get install -y postgresql"):
        stack.postgres_bin("initdb")
