"""Evergreen's deployments for another kind of work pool: prefect.yaml with an overlay's work
pool, job variables and pull steps (`evergreen deploy-file deploy/kubernetes.yaml`).

prefect.yaml stays the one place where deployments, schedules, triggers and concurrency are
declared; an overlay (deploy/kubernetes.yaml, deploy/docker.yaml) says only where they run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILE = Path(__file__).resolve().parents[2] / "prefect.yaml"
WORKER_PACKAGES = {"kubernetes": "prefect-kubernetes", "docker": "prefect-docker", "process": "prefect"}


class OverlayError(ValueError):
    """An overlay that cannot apply; the message names the field."""


def load_yaml(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise OverlayError(f"{path}: not a YAML mapping")
    return raw


def render(project: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`project` (a parsed prefect.yaml, anchors resolved) with every deployment's work pool
    replaced by the overlay's (its job variables over the deployment's own) and the
    overlay's `pull` (and `build`/`push`, if any) as the project's steps."""
    pool = overlay.get("work_pool")
    if not isinstance(pool, dict) or not pool.get("name"):
        raise OverlayError("overlay: work_pool.name is required (the work pool the deployments run on)")
    if not isinstance(overlay.get("pull"), list):
        raise OverlayError("overlay: pull must be a list of Prefect steps (how a run gets the project's code)")
    out = {k: copy.deepcopy(v) for k, v in project.items() if k != "definitions"}
    for step in ("build", "push", "pull"):
        if step in overlay:
            out[step] = copy.deepcopy(overlay[step])
    for deployment in out.get("deployments") or []:
        own = (deployment.get("work_pool") or {}).get("job_variables") or {}
        deployment["work_pool"] = {
            **copy.deepcopy(pool),
            "job_variables": {**own, **copy.deepcopy(pool.get("job_variables") or {})},
        }
    return out


def worker_schema(worker_type: str) -> dict[str, Any]:
    """The job-variable schema of a worker type, from the worker metadata Prefect ships (what
    `prefect work-pool create --type TYPE` puts in a new pool's base job template)."""
    import json

    import prefect

    views = Path(prefect.__file__).parent / "server" / "api" / "collections_data" / "views" / "aggregate-worker-metadata.json"
    metadata = json.loads(views.read_text(encoding="utf-8"))
    package = WORKER_PACKAGES.get(worker_type)
    if package is None or worker_type not in metadata.get(package, {}):
        raise OverlayError(f"unknown worker type {worker_type!r}; known: {sorted(WORKER_PACKAGES)}")
    return metadata[package][worker_type]["default_base_job_configuration"]["variables"]


def validate_job_variables(job_variables: dict[str, Any], worker_type: str) -> list[str]:
    """Prefect's own check of deployment job variables against a worker type's schema
    (`prefect.utilities.schema_tools.validate`, as the server does); the errors, or []."""
    from prefect.utilities.schema_tools import ValidationError, validate

    try:
        validate(job_variables, worker_schema(worker_type), raise_on_error=True, ignore_required=True)
    except ValidationError as exc:
        return [str(exc)]
    return []


def render_file(overlay_path: Path, project_path: Path = PROJECT_FILE) -> str:
    """The rendered prefect file as YAML text."""
    rendered = render(load_yaml(project_path), load_yaml(overlay_path))
    header = f"# Rendered by `evergreen deploy-file {overlay_path}` from {project_path.name}: edit those, not this.\n"
    return header + yaml.safe_dump(rendered, sort_keys=False)
