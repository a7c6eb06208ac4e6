"""Links between the two UIs people use: MLflow pages that open in the model-training view,
and the Prefect flow run a run or version came from.

Pure string work, except `prefect_flow_run_url`, which reads the Prefect settings a flow
run's process has in its environment (when it is called, never at import).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

# The MLflow 3 UI opens an experiment tagged so in its model-training view ("Model training"),
# not the GenAI view (traces, evaluations) that untagged experiments default to.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# The UI's query for the same view on any experiment page link.
MODEL_TRAINING_QUERY = "workflowType=machine_learning"

PREFECT_FLOW_RUN_ID_TAG = "evergreen.prefect.flow_run_id"
PREFECT_FLOW_RUN_URL_TAG = "evergreen.prefect.flow_run_url"


def mlflow_run_url(ui: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI at `ui`, in the model-training view."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_QUERY}"


def mlflow_experiment_url(ui: str, experiment_id: str) -> str:
    """An experiment's runs in the MLflow UI at `ui`, in the model-training view."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_QUERY}"


def mlflow_version_url(ui: str, model_name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI at `ui`."""
    return f"{ui.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{version}"


def prefect_ui_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The Prefect UI's base URL: PREFECT_UI_URL, else PREFECT_API_URL without its `/api`;
    None when neither is set (a run without a server: there is no page to link)."""
    env = os.environ if environ is None else environ
    ui = (env.get("PREFECT_UI_URL") or "").strip()
    if ui:
        return ui.rstrip("/")
    api = (env.get("PREFECT_API_URL") or "").strip().rstrip("/")
    if not api.startswith(("http://", "https://")):
        return None
    return api[: -len("/api")] if api.endswith("/api") else api


def prefect_flow_run_url(flow_run_id: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """`<Prefect UI>/runs/flow-run/<id>`, or None without an id or a known UI."""
    if not flow_run_id:
        return None
    ui = prefect_ui_url(environ)
    return None if ui is None else f"{ui}/runs/flow-run/{flow_run_id}"


def with_prefect_link(tags: Mapping[str, str], flow_run_id: str | None = None) -> dict[str, str]:
    """`tags` plus `evergreen.prefect.flow_run_url` when the flow run (given, or named by
    `evergreen.prefect.flow_run_id` in `tags`) has a page to link to."""
    out = dict(tags)
    url = prefect_flow_run_url(flow_run_id or out.get(PREFECT_FLOW_RUN_ID_TAG))
    if url and PREFECT_FLOW_RUN_URL_TAG not in out:
        out[PREFECT_FLOW_RUN_URL_TAG] = url
    return out
