"""`python -m bench fleet`'s arithmetic: percentiles, orchestration seconds and the 1,000-model
projection, on made-up phases (the benchmark itself needs the stack)."""

from __future__ import annotations

import math

from bench.fleet_bench import Phase, RunTiming, _percentile, project


def _phase(workers: int, wall: float, models: int = 10) -> Phase:
    return Phase(workers=workers, models=models, rows=5000, wall_s=wall, model_batches_per_min=models / wall * 60,
                 api_p50_ms=5, api_p99_ms=40, api_samples=100, pg_connections_max=12, pg_connections_mean=9.5,
                 prefect_db_bytes_per_batch=200_000, mlflow_db_bytes_per_batch=50_000,
                 orchestration_s_median=8, tasks_s_median=20)


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 0.5) in (50.0, 51.0)
    assert _percentile(values, 0.99) == 99.0
    assert math.isnan(_percentile([], 0.5))


def test_orchestration_is_the_run_time_outside_tasks() -> None:
    # Waiting for a free worker (queued) is not the run's orchestration; its start is.
    t = RunTiming(model="m", state="Completed", queued_s=66.0, running_s=30.0, tasks_s=27.0, starting_s=6.0)
    assert t.total_s == 36.0 and t.orchestration_s == 9.0
    assert RunTiming("m", "Completed", 0.0, 1.0, 2.0).orchestration_s == 0.0  # never negative


def test_projection_for_a_thousand_daily_models() -> None:
    big = RunTiming(model="m", state="Completed", queued_s=5.0, running_s=95.0, tasks_s=90.0, starting_s=5.0)
    p = project([_phase(1, 300.0), _phase(2, 170.0)], big)
    assert p["worker_seconds_per_model_batch"] == 30.0
    assert p["workers_spread_over_24h"] == 1  # 30,000 worker-seconds a day
    assert p["workers_within_2h"] == 5  # 30,000 s in a 7,200 s window
    assert p["database_bytes_per_month"] == 250_000 * 1000 * 30
    assert p["big_run_orchestration_share"] == 0.1
