"""The `monitor` flow: validate each new production batch, estimate drift and performance,
emit drift events, publish what was found (`evergreen.loop.monitor.monitor`, each part a
Prefect task)."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.loop import monitor as step
from evergreen.reports import MonitorResult
from evergreen.telemetry import disable_telemetry
from tasks.registry import model_flight
from tasks.runner import PREFECT
from tasks.runs import monitor_run_name, rename_run, tag_run
from tasks.status import explain_run
from tasks.wiring import production_ports


@flow(name="monitor", flow_run_name=monitor_run_name, log_prints=True)
def monitor(config: str | ModelConfig | None = None, batch: str | None = None) -> State:
    """Monitor one batch (`batch`), or every batch of the stream not monitored yet, of the
    model `config` names (a saved `evergreen-model` block or a YAML path). One monitor per
    model at a time: a second one waits for the first (the ledger says what is done)."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    run_id = str(flow_run.id) if flow_run.id else None
    ports = production_ports(cfg)
    with model_flight("monitor", cfg, wait=True):
        results = step.monitor(ports, cfg, batch, run=PREFECT, flow_run_id=run_id)
        if results or batch is not None:
            final = monitor_state(results)
        else:
            # No new batch: labels may have landed for an open alert episode (its deferred retrain).
            check = step.check_episode(ports, cfg, run=PREFECT)
            final = monitor_state(results, None if check is None else check.reason)
    if batch is None:  # `monitor · <model> · pending` says which batches it went through
        rename_run("monitor", results)
    explain_run(cfg, ports, final.message or final.name)
    return final


def monitor_state(results: list[MonitorResult], episode: str | None = None) -> State:
    """`DataRejected` (Failed) when a batch was rejected, else Completed with the alerts."""
    if not results:
        tail = f"; open alert episode: {episode}" if episode else ""
        return Completed(message=f"no new batches to monitor{tail}", data=[])
    rejected = [r for r in results if not r.valid]
    if rejected:
        return Failed(name="DataRejected", message="; ".join(r.message for r in rejected), data=results)
    drifted = [r.batch_id for r in results if r.drift_detected or r.performance_degraded]
    summary = f"{len(results)} batch(es) monitored; " + (f"alerts on {drifted}" if drifted else "no drift")
    return Completed(message=summary, data=results)
