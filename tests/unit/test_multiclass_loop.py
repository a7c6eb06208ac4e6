"""The loop's steps on a multiclass model, end to end on in-memory ports, with NannyML's
mc_* tables as a user's own data (cut here into daily batches and delayed label files):
bootstrap retrain -> serve and monitor batches (drift when the stream shifts) -> retrain ->
gate -> canary served and reviewed; then the backtest replays the same stream. A break in
any step of the multiclass path fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen import events
from evergreen.adapters import io
from evergreen.adapters.ports import Ports
from evergreen.aliases import CANARY, CHALLENGER, CHAMPION
from evergreen.columns import ALIAS_COLUMN, SERVED_AT_COLUMN
from evergreen.config import ModelConfig
from evergreen.decisions.routing import route_many
from evergreen.lineage import Trigger
from tests.unit.test_multiclass import MC_CLASSES, _mc_tables, nannyml_mc_config

pytestmark = pytest.mark.slow

# Two quiet days from the start of NannyML's analysis part, then days after its shift.
QUIET = ["2020-09-02", "2020-09-03"]
SHIFTED = ["2020-12-10", "2020-12-11"]
CANARY_DAY = "2020-12-12"
PROBA = [f"y_pred_proba_{c}" for c in MC_CLASSES]


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    ref, ana, gt = _mc_tables()
    ana = ana.drop(columns=[*PROBA, "y_pred"]).merge(gt, on="id")  # features and labels
    days = ana["timestamp"].dt.strftime("%Y-%m-%d")
    out = {day: ana[days == day].reset_index(drop=True) for day in [*QUIET, *SHIFTED, CANARY_DAY]}
    # The user's own model's predictions on a labelled part of the reference (the mc table's
    # serving columns) are the first monitor reference; the training reference is before it.
    out["training"] = ref.iloc[:6000].drop(columns=[*PROBA, "y_pred"])
    out["monitor"] = ref.iloc[6000:9000].reset_index(drop=True)
    return out


def _config(root: str) -> ModelConfig:
    return nannyml_mc_config(
        "roc_auc_ovr",
        data={"root": root, "rows_per_batch": 500, "label_delay_days": 1},
        training={"num_boost_round": 60, "early_stopping_rounds": 10, "nthread": 2},
        retrain={"window": "expanding", "window_days": None},
        gate={"bootstrap_samples": 200, "max_latency_ms": 1e9},
        canary={"traffic_share": 0.5, "min_predictions": 100, "min_labels": 100, "window_hours": 0},
    )


def _next_day(day: str) -> str:
    return (pd.Timestamp(day) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


def _serve(ports: Ports, cfg: ModelConfig, day: str, frame: pd.DataFrame) -> pd.DataFrame:
    """What the scoring service does with a day's rows: route by id, score with the model of
    the alias, log; the day's served rows become its batch file."""
    from evergreen.engines.training import output_columns

    cols = cfg.columns
    champion = ports.registry.load_alias(CHAMPION)
    canary = ports.registry.load_alias(CANARY)
    assert champion is not None
    rows = frame[[cols.id, cols.timestamp, *cols.features]]
    aliases = np.asarray(
        route_many(
            rows[cols.id].tolist(),
            cfg.mlflow.model_name,
            cfg.canary.traffic_share,
            canary is not None,
        )
    )
    served = rows.copy()
    for alias, loaded in ((CHAMPION, champion), (CANARY, canary)):
        mask = aliases == alias
        if loaded is None or not mask.any():
            continue
        for name, values in output_columns(loaded.model.predict(rows[mask]), cols).items():
            served.loc[mask, name] = values
        served.loc[mask, cols.model_version] = loaded.version.version
    ports.predictions.append(
        served.assign(**{ALIAS_COLUMN: aliases, SERVED_AT_COLUMN: served[cols.timestamp]})
    )
    io.write_table(served, f"{cfg.data.path('batches')}/{day}.parquet")
    return served


def _deliver_labels(cfg: ModelConfig, day: str, frame: pd.DataFrame) -> None:
    io.write_table(
        frame[[cfg.columns.id, cfg.columns.target]],
        f"{cfg.data.path('labels')}/{_next_day(day)}.parquet",
    )


def test_the_loop_steps_on_a_multiclass_stream(tables: dict[str, pd.DataFrame]) -> None:
    from evergreen.adapters.wiring import in_memory, memory_ports
    from evergreen.loop.monitor import monitor
    from evergreen.loop.promote import promote, review_canary
    from evergreen.loop.retrain import retrain

    cfg = in_memory(_config("unused"), prefix="mc-loop")
    # The data's clock stamps alias moves, as in a replay: the canary review reads what was
    # served since the canary started, by the rows' serving time.
    clock = {"now": pd.Timestamp("2020-09-01", tz="UTC")}
    ports = memory_ports(cfg, clock=lambda: clock["now"].to_pydatetime())
    io.write_table(tables["training"], cfg.data.path("training_reference"))
    io.write_table(tables["monitor"], cfg.data.path("monitor_reference"))

    first = retrain(ports, cfg, Trigger.of("manual", None, "bootstrap", None))
    assert first.status == "registered" and first.bootstrap, first.message
    assert first.metrics["roc_auc_ovr"] > 0.8 and "brier" in first.metrics
    champion = ports.registry.load_alias(CHAMPION)
    assert champion is not None and champion.model.classes == MC_CLASSES
    # The champion's reference for the next monitor carries its class and per-class probabilities.
    version, reference = ports.registry.champion_reference()
    assert version == first.version and {"y_pred", *PROBA, "y_true"} <= set(reference.columns)
    assert set(reference["y_pred"]) <= set(MC_CLASSES)
    assert promote(ports, cfg, first.version).result.decision == "skipped"  # already champion

    results = {}
    for day in [*QUIET, *SHIFTED]:
        clock["now"] = pd.Timestamp(day, tz="UTC")
        _serve(ports, cfg, day, tables[day])
        (results[day],) = monitor(ports, cfg, f"{cfg.data.path('batches')}/{day}.parquet")
        _deliver_labels(cfg, day, tables[day])
    drifted = {day: [k for k, f in r.features.items() if f["alert"]] for day, r in results.items()}
    for result in results.values():
        assert result.valid, result.message
        assert result.metric == "roc_auc_ovr" and result.estimated_metric is not None
    assert not drifted[QUIET[0]] and not drifted[QUIET[1]]
    assert drifted[SHIFTED[-1]] and results[SHIFTED[-1]].performance_degraded
    assert ports.events.payloads(events.DRIFT_DETECTED), "no drift event for the shifted days"
    # Labels of the day before arrived: the realized metric of what was served.
    assert results[SHIFTED[-1]].realized_metric is not None
    assert results[SHIFTED[-1]].realized_metric < results[QUIET[-1]].realized_metric

    clock["now"] = pd.Timestamp(_next_day(SHIFTED[-1]), tz="UTC") - pd.Timedelta(hours=1)
    second = retrain(ports, cfg, Trigger.of("manual", None, "after the shift", None))
    assert second.status == "registered" and not second.bootstrap, second.message
    assert ports.registry.version_by_alias(CHALLENGER).version == second.version

    gated = promote(ports, cfg, second.version)
    checks = {c["name"]: c for c in gated.result.checks["checks"]}
    assert {"relative_margin", "bootstrap", "calibration", "latency", "size"} <= set(checks)
    assert gated.result.decision == "passed", gated.message
    assert ports.registry.version_by_alias(CANARY).version == second.version

    clock["now"] = pd.Timestamp(CANARY_DAY, tz="UTC")
    served = _serve(ports, cfg, CANARY_DAY, tables[CANARY_DAY])
    assert set(served["model_version"]) == {first.version, second.version}
    monitored = monitor(ports, cfg, f"{cfg.data.path('batches')}/{CANARY_DAY}.parquet")[0]
    assert monitored.valid, monitored.message
    _deliver_labels(cfg, CANARY_DAY, tables[CANARY_DAY])
    review = review_canary(ports, cfg)
    assert review.result.decision in ("promoted", "rolled_back"), review.message
    evidence = review.result.checks
    assert evidence["basis"] == "realized" and evidence["canary_value"] is not None
    assert evidence["canary"]["n_labelled"] >= cfg.canary.min_labels


def test_the_backtest_replays_a_multiclass_stream(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from evergreen.apps.backtest import run_backtest

    cfg = _config(str(tmp_path))
    io.write_table(tables["training"], cfg.data.path("training_reference"))
    io.write_table(tables["monitor"], cfg.data.path("monitor_reference"))
    days = [*QUIET, *SHIFTED, CANARY_DAY]
    for day in days:
        io.write_table(
            tables[day].drop(columns="y_true"), f"{cfg.data.path('batches')}/{day}.parquet"
        )
        _deliver_labels(cfg, day, tables[day])
    result = run_backtest(cfg, ["always"], baselines=False, log=lambda _: None)
    always = result.policies["always"]
    assert [c.chunk for c in always.chunks] == days
    realized = [c.realized_metric for c in always.chunks]
    assert all(r is not None and 0.5 < r <= 1 for r in realized)
    assert always.mean_metric == pytest.approx(np.mean(realized))
    assert always.retrains >= 2 and all(c.valid for c in always.chunks)
