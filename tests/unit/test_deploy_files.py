"""The Kubernetes and Docker overlays (deploy/*.yaml) render prefect.yaml for those work
pools, and their job variables pass Prefect's own validation against the job-variable schema
of each worker type (from the worker metadata the installed Prefect ships, which is what
`prefect work-pool create --type kubernetes|docker` uses: prefect-kubernetes and
prefect-docker themselves are not installed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evergreen.apps.deployfile import (
    OverlayError,
    load_yaml,
    render,
    render_file,
    validate_job_variables,
    worker_schema,
)

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = {"kubernetes": ROOT / "deploy" / "kubernetes.yaml", "docker": ROOT / "deploy" / "docker.yaml"}


@pytest.mark.parametrize("worker_type", sorted(OVERLAYS))
def test_overlay_job_variables_pass_the_worker_schema(worker_type: str) -> None:
    overlay = load_yaml(OVERLAYS[worker_type])
    variables = overlay["work_pool"]["job_variables"]
    assert validate_job_variables(variables, worker_type) == []
    # Every variable is one the worker type knows (a typo would be ignored by Prefect).
    assert set(variables) <= set(worker_schema(worker_type)["properties"])


@pytest.mark.parametrize(
    ("worker_type", "bad"),
    [("kubernetes", {"image_pull_policy": "Sometimes"}), ("kubernetes", {"finished_job_ttl": "an hour"}),
     ("docker", {"auto_remove": "yes please"}), ("docker", {"env": {"A": 1}})],
)
def test_the_check_refuses_bad_job_variables(worker_type: str, bad: dict) -> None:
    assert validate_job_variables(bad, worker_type)


@pytest.mark.parametrize("worker_type", sorted(OVERLAYS))
def test_rendered_file_keeps_every_deployment_on_the_overlay_pool(worker_type: str, tmp_path: Path) -> None:
    import yaml
    from prefect.utilities.importtools import import_object

    project = load_yaml(ROOT / "prefect.yaml")
    overlay = load_yaml(OVERLAYS[worker_type])
    rendered = yaml.safe_load(render_file(OVERLAYS[worker_type], ROOT / "prefect.yaml"))
    assert [d["name"] for d in rendered["deployments"]] == [d["name"] for d in project["deployments"]]
    for before, after in zip(project["deployments"], rendered["deployments"], strict=True):
        assert after["work_pool"]["name"] == overlay["work_pool"]["name"]
        assert validate_job_variables(after["work_pool"]["job_variables"], worker_type) == []
        for key in ("entrypoint", "parameters", "schedules", "triggers", "concurrency_limit"):
            assert after.get(key) == before.get(key), key
    # Pull steps name real Prefect steps.
    for step in rendered["pull"]:
        (name,) = step
        assert callable(import_object(name))
    # No secret (nor a Secret block reference, which `prefect deploy` would resolve into the
    # deployment in plain text) in what is deployed.
    text = render_file(OVERLAYS[worker_type], ROOT / "prefect.yaml")
    assert "prefect.blocks.secret" not in text and "PASSWORD" not in text and "SECRET" not in text


def test_an_overlay_without_a_pool_is_refused() -> None:
    with pytest.raises(OverlayError, match="work_pool.name"):
        render({"deployments": []}, {"pull": []})
