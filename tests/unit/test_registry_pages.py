"""The registry's pages: version descriptions and the model's alias-history table, as pure
renderings and as the registry keeps them current (on the in-memory registry client)."""

from __future__ import annotations

import json

import pytest

from evergreen.adapters import links, memory, registry, registry_pages

GATE = {
    "passed": False,
    "challenger_version": "3",
    "champion_version": "2",
    "metric": "roc_auc",
    "mode": "non_inferiority",
    "checks": [
        {"name": "metric", "passed": False, "value": 0.912, "threshold": 0.94, "detail": "roc_auc 0.912 < 0.94"},
        {"name": "latency", "passed": True, "value": 1.5, "threshold": 50.0, "detail": "ok | fast"},
    ],
    "reasons": ["roc_auc 0.912 is below the champion's 0.951 minus margin 0.01"],
    "skipped": ["floor: skipped, gate.metric_floor is not set"],
}
LONG_REASON = "the challenger's roc_auc on 2,345 fresh rows is below the champion's by 0.039; " * 12


def _tags(**extra: str) -> dict[str, str]:
    return {
        "evergreen.status": "candidate",
        "evergreen.trigger": "event",
        "evergreen.trigger.reason": "drift detected on car_value",
        "evergreen.dataset_digest": "f" * 64,
        "evergreen.dataset_rows": "12345",
        "evergreen.dataset_time_min": "2018-12-01 00:00:00+00:00",
        "evergreen.window_end": "2019-01-11 00:00:00+00:00",
        "evergreen.train_end": "2019-01-10 00:00:00+00:00",
        "evergreen.metric.roc_auc": "0.9412",
        "evergreen.metric.n": "2000",
        **extra,
    }


def test_version_page_names_trigger_window_data_and_metrics() -> None:
    text = registry_pages.describe_version(_tags(), "car-loan", "3")
    assert text.startswith("### car-loan v3 — candidate")
    assert "| Trigger | event — drift detected on car_value |" in text
    assert "2018-12-01 00:00:00 to 2019-01-11 00:00:00" in text
    assert "sha256 `ffffffffffffffff…`, 12,345 rows" in text
    assert "roc_auc 0.9412 on 2,000 rows" in text
    assert "Gate" not in text and "Canary" not in text  # not gated yet


def test_rejected_version_shows_every_reason_in_full_and_the_gate_checks() -> None:
    tags = _tags(**{
        "evergreen.status": "rejected",
        "evergreen.rejected.reasons": LONG_REASON,
        "evergreen.gate.passed": "false",
        "evergreen.gate.results": json.dumps(GATE),
    })
    text = registry_pages.describe_version(tags, "car-loan", "3")
    assert " ".join(LONG_REASON.split()) in text  # longer than any table cell shows, kept whole
    assert text.index("Why rejected") < text.index("| Trigger")  # the reason comes first
    assert "| Gate | **failed** against champion v2 (mode non_inferiority) |" in text
    assert "| metric | **fail** | 0.912 | 0.94 | roc_auc 0.912 < 0.94 |" in text
    assert "ok \\| fast" in text  # a pipe in a detail does not break the table
    assert "| floor | skipped |" in text
    assert len(text) <= registry_pages.DESCRIPTION_LIMIT


def test_a_truncated_gate_tag_still_reads_as_its_verdict() -> None:
    tags = _tags(**{"evergreen.gate.passed": "true", "evergreen.gate.results": json.dumps(GATE)[:50]})
    text = registry_pages.describe_version(tags, "car-loan", "3")
    assert "| Gate | **passed** |" in text and "Gate checks" not in text


def test_canary_outcome_and_prefect_link() -> None:
    tags = _tags(**{
        "evergreen.status": "champion",
        "evergreen.canary.outcome": "promoted",
        "evergreen.canary.reason": "canary review: non-inferior on 812 labelled rows",
        "evergreen.prefect.flow_run_id": "abc",
        "evergreen.prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/abc",
    })
    text = registry_pages.describe_version(tags, "car-loan", "4")
    assert "| Canary review | **promoted** — canary review: non-inferior on 812 labelled rows |" in text
    assert "[abc](http://127.0.0.1:4200/runs/flow-run/abc)" in text


def test_description_fits_mlflow_column_with_status_first() -> None:
    many = dict(GATE, checks=[dict(GATE["checks"][0], name=f"slice-{i}") for i in range(200)])
    tags = _tags(**{
        "evergreen.status": "rejected",
        "evergreen.rejected.reasons": "too weak",
        "evergreen.gate.passed": "false",
        "evergreen.gate.results": json.dumps(many),
    })
    text = registry_pages.describe_version(tags, "car-loan", "3")
    assert len(text) <= registry_pages.DESCRIPTION_LIMIT
    assert "**Why rejected**: too weak" in text and "cut to fit" in text


def _move(i: int, alias: str = "champion", state: str = "done") -> dict[str, str | None]:
    return {
        "time": f"2019-01-{i:02d}T06:00:00+00:00", "alias": alias, "from_version": str(i - 1) if i > 1 else None,
        "to_version": str(i), "reason": f"canary review: move {i}", "actor": "canary-review/x", "state": state,
    }


def test_model_page_lists_alias_history_newest_first() -> None:
    moves = [_move(1), _move(2), _move(3, "canary", state="abandoned")]
    text = registry_pages.describe_model("car-loan", {"champion": "2", "canary": None}, moves)
    assert "**Aliases now**: `champion` → v2 · `canary` → —" in text
    first, second = text.index("move 2"), text.index("move 1")
    assert first < second and "move 3" not in text  # abandoned moves never happened
    assert "| 2019-01-02 06:00:00 | champion | v1 | v2 | canary-review/x | canary review: move 2 |" in text


def test_model_page_keeps_the_newest_moves_that_fit() -> None:
    moves = [_move(i % 28 + 1) for i in range(300)]
    text = registry_pages.describe_model("car-loan", {"champion": "1"}, moves)
    assert len(text) <= registry_pages.DESCRIPTION_LIMIT
    assert "older moves not shown: `evergreen history`" in text


@pytest.fixture
def reg() -> registry.Registry:
    return registry.Registry("car-loan", client=memory.MemoryRegistryClient(), artifacts=memory.MemoryArtifacts())


def _description(reg: registry.Registry, version: str) -> str:
    return reg.client.get_model_version("car-loan", version).description or ""


def test_registry_rewrites_the_description_as_the_status_changes(reg: registry.Registry) -> None:
    v1 = reg.create_version("memory://models/1", "run1", _tags())
    reg.move_alias(registry.CHAMPION, v1.version, "bootstrap", "test")
    reg.set_tags(v1.version, {registry.STATUS_TAG: "champion"})
    v2 = reg.create_version("memory://models/2", "run2", _tags())
    assert "— candidate" in _description(reg, v2.version)
    reg.move_alias(registry.CHALLENGER, v2.version, "retrained", "test")
    reg.reject_challenger(v2.version, GATE, [LONG_REASON], "promote/x", None)
    text = _description(reg, v2.version)
    assert "— rejected" in text and " ".join(LONG_REASON.split()) in text and "**failed**" in text
    assert "— champion" in _description(reg, v1.version)


def test_registry_records_canary_outcome_and_history_table(reg: registry.Registry) -> None:
    v1 = reg.create_version("memory://models/1", "run1", _tags())
    reg.move_alias(registry.CHAMPION, v1.version, "bootstrap", "test")
    v2 = reg.create_version("memory://models/2", "run2", _tags())
    reg.move_alias(registry.CHALLENGER, v2.version, "retrained", "test")
    reg.start_canary(v2.version, dict(GATE, passed=True, reasons=[]), "promote/x", None)
    assert "**passed** against champion v2" in _description(reg, v2.version)
    reg.promote_canary(v2.version, "canary review: better on 900 rows", "canary-review/x", None)
    text = _description(reg, v2.version)
    assert "— champion" in text and "**promoted** — canary review: better on 900 rows" in text
    model = reg.client.get_registered_model("car-loan").description
    assert "**Aliases now**: `champion` → v2 · `canary` → — · `challenger` → —" in model
    assert model.index("canary v2 promoted") < model.index("| bootstrap |")
    # Every recorded move is in the table, as the raw tags hold them.
    assert model.count("\n| 20") == len(reg.alias_history())


def test_prefect_link_from_env_is_tagged_on_new_versions(reg: registry.Registry, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4321/api")
    v = reg.create_version("memory://models/1", "run1", _tags(**{"evergreen.prefect.flow_run_id": "fr-1"}))
    assert v.tags[links.PREFECT_FLOW_RUN_URL_TAG] == "http://127.0.0.1:4321/runs/flow-run/fr-1"
    assert "[fr-1](http://127.0.0.1:4321/runs/flow-run/fr-1)" in _description(reg, v.version)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PREFECT_UI_URL": "http://ui:4200/"}, "http://ui:4200/runs/flow-run/x"),
        ({"PREFECT_API_URL": "http://h:4200/api"}, "http://h:4200/runs/flow-run/x"),
        ({"PREFECT_API_URL": "http://h:4200/api", "PREFECT_UI_URL": "https://p.example"}, "https://p.example/runs/flow-run/x"),
        ({}, None),
        ({"PREFECT_API_URL": "ephemeral"}, None),
    ],
)
def test_prefect_flow_run_url(env: dict[str, str], expected: str | None) -> None:
    assert links.prefect_flow_run_url("x", env) == expected
    assert links.prefect_flow_run_url(None, env) is None


def test_mlflow_links_open_the_model_training_view() -> None:
    url = links.mlflow_run_url("http://127.0.0.1:5000/", "3", "abc")
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert links.mlflow_version_url("http://m", "car loan", "2") == "http://m/#/models/car%20loan/versions/2"
