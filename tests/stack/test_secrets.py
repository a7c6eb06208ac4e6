"""A model run on the stack's workers, and the stack's secrets nowhere but where they belong.

One model (the demo's car-loan data on `s3://`) is registered with `evergreen register`,
bootstrapped, and one batch is monitored by the monitor deployment on the work pool: the
worker hands the flow run the MLflow and S3 credentials from the Prefect Secret blocks (the
run logs to the authenticated MLflow server and reads s3://, so it got them). Then the secret
search of tests/reliability/test_security.py runs over the whole stack (after the fleet test
when it ran): every log and file under its folder but the credentials file and MLflow's auth
config, PostgreSQL's folder, every object in the bucket, the text of every table of both
databases (Prefect's logs, artifacts, events, parameters, deployments, work pools; MLflow's
params and tags), prefect.yaml and the model's YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evergreen.apps import stack
from tests.stack.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]
NAME = "stack-secrets"
DATA = f"s3://evergreen/{NAME}"


def _cli(s: Stack, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "evergreen.apps.cli", *args], cwd=ROOT, env={**os.environ, **s.env},
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"evergreen {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def monitored(running_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    import fsspec
    from prefect.deployments import run_deployment

    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream

    s = running_stack
    work = tmp_path_factory.mktemp("secrets")
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    raw["name"] = NAME
    raw["data"] = {**raw.get("data", {}), "root": DATA, "rows_per_batch": 2000}
    raw["mlflow"] = {**raw["mlflow"], "tracking_uri": s.state.mlflow_url, "artifact_root": f"mlflow-artifacts:/{NAME}",
                     "model_name": NAME, "ui_url": s.state.mlflow_url}
    config = work / f"{NAME}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    cfg = load_config(config)
    local = work / "stream"
    info = write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(local)})}), str(local))
    fs = fsspec.filesystem("s3")
    fs.put_file(str(local / "reference.parquet"), f"{DATA}/reference.parquet".removeprefix("s3://"))
    batch = f"{DATA}/batches/{info.days[0]}.parquet"
    fs.put_file(str(local / "batches" / f"{info.days[0]}.parquet"), batch.removeprefix("s3://"))
    _cli(s, "register", "--config", str(config))
    _cli(s, "bootstrap", "--config", str(config))
    run = run_deployment("monitor/monitor", parameters={"config": NAME, "batch": batch}, timeout=900)
    return config, run


def test_a_worker_runs_a_model_with_credentials_from_secret_blocks(monitored: tuple[Path, object], running_stack: Stack) -> None:
    from evergreen.adapters.store import FileStore
    from evergreen.config import load_config

    config, run = monitored
    assert run.state is not None and run.state.is_completed(), (run.state, run.state and run.state.message)
    cfg = load_config(config)
    assert len(FileStore(cfg).read_ledger().batches) == 1  # the run read s3:// and wrote its ledger there
    # The work pool hands out references, not values; the worker resolved them for the run.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(stack.WORK_POOL)
    env = pool.base_job_template["variables"]["properties"]["env"]["default"]
    assert env["MLFLOW_TRACKING_PASSWORD"].startswith("{{ prefect.blocks.secret.")
    assert running_stack.creds.mlflow_password not in json.dumps(pool.base_job_template)


def test_no_secret_of_the_stack_in_its_logs_or_stores(monitored: tuple[Path, object], running_stack: Stack) -> None:
    import fsspec

    from tests.reliability.test_security import _files_holding, _plain_secrets

    s = running_stack
    secrets = tuple(v for v in s.creds.values() if len(v) >= 8)
    home = s.home
    skip = (home / "credentials.json", home / "mlflow" / "basic_auth.ini")
    # The control: the search finds them where they are kept.
    assert _files_holding(home, secrets)[str(home / "credentials.json")]
    leaks: dict[str, object] = {}
    if files := _files_holding(home, secrets, skip=skip):
        leaks["files"] = files
    postgres = Path(s.state.postgres_data).parent
    if not postgres.is_relative_to(home.resolve()) and (files := _files_holding(postgres, secrets)):
        leaks["postgres files"] = files
    fs = fsspec.filesystem("s3")
    objects = fs.find("evergreen")
    assert objects
    for path in objects:
        if hits := [x for x in secrets if x.encode() in fs.cat_file(path)]:
            leaks[f"s3://{path}"] = hits
    dumps = {db: _dump_text(s, db) for db in ("prefect", "mlflow")}
    assert f"evergreen.model.{NAME}" in dumps["prefect"] and NAME in dumps["mlflow"]  # real content was read
    for db, text in dumps.items():
        if hits := [x for x in secrets if x in text]:
            leaks[f"database {db}"] = hits
    config, _ = monitored
    text = config.read_text(encoding="utf-8")
    assert not [x for x in secrets if x in text] and not _plain_secrets(yaml.safe_load(text))
    assert not [x for x in secrets if x in (ROOT / "prefect.yaml").read_text(encoding="utf-8")]
    assert leaks == {}, json.dumps(leaks, indent=1, default=str)[:4000]


def _dump_text(s: Stack, database: str) -> str:
    """Every text-like column of every table of a database, as one string (Prefect stores
    block documents' data encrypted)."""
    conn = stack._pg_connect(s.state, s.creds.postgres_superuser, s.creds.postgres_password, database)
    parts: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
            )
            for table, column in cur.fetchall():
                cur.execute(f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')  # noqa: S608 - names from the catalog
                parts += [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    return "\n".join(parts)
