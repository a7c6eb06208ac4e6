"""Alert episodes through the loop's steps (in-memory ports): one event when an episode
opens, its retrain deferred until labelled post-change rows exist, requested by the monitor
once they land (between batches too), never twice on the same evidence; the retrain learns
from after the change and its version carries the episode, which gates it on improvement."""

from __future__ import annotations

import pandas as pd
import pytest

from evergreen import events
from evergreen.adapters import io
from evergreen.adapters.wiring import in_memory, memory_ports
from evergreen.config import ModelConfig
from evergreen.lineage import Trigger
from evergreen.loop import bootstrap, monitor, promote, retrain, state
from tests.support import write_toy_drift_stream

pytestmark = pytest.mark.slow
DAYS, ROWS, DRIFT_AT = 6, 400, 2


@pytest.fixture
def world(toy_config, tmp_path):  # noqa: ANN001, ANN201
    """The toy stream with its label files held back (delivered by the test)."""
    base = toy_config()
    cfg = in_memory(base, "episodes")
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"rows_per_batch": ROWS, "label_delay_days": 1}),
            # Feature drift alone: the toy reference is small and its estimate noisy.
            "retrain": cfg.retrain.model_copy(
                update={"cooldown_hours": 0, "min_post_change_rows": 300, "signals": ["feature_drift"]}
            ),
            "gate": cfg.gate.model_copy(update={"min_rows": 100}),
        }
    )
    write_toy_drift_stream(cfg, cfg.data.root, DAYS, ROWS, drift_at=DRIFT_AT)
    held = {}
    for f in io.list_batches(cfg.data.path("labels")):
        held[f.day] = io.read_table(f.path)
        io._fs(f.path)[0].rm(f.path)  # noqa: SLF001 - the test's own memory files
    ports = memory_ports(cfg)
    assert bootstrap.bootstrap(ports, cfg).status == "registered"
    return cfg, ports, held


def _deliver(cfg: ModelConfig, held: dict[str, pd.DataFrame], up_to: str) -> None:
    for day, frame in sorted(held.items()):
        if day <= up_to:
            io.write_table(frame, f"{cfg.data.path('labels')}/{day}.parquet")


def _emitted(ports) -> list[str]:  # noqa: ANN001
    return [name for name, _, _ in ports.events.emitted]


def test_the_retrain_waits_for_post_change_labels_and_is_requested_once(world) -> None:  # noqa: ANN001
    cfg, ports, held = world
    batches = io.list_batches(cfg.data.path("batches"))
    results = [monitor.monitor(ports, cfg, b.path)[0] for b in batches[: DRIFT_AT + 1]]
    opened = results[DRIFT_AT]
    assert opened.alert and opened.episode["transition"] == "opened" and opened.episode["id"] == batches[DRIFT_AT].day
    assert opened.decision == "deferred" and events.DRIFT_DETECTED in opened.events
    assert events.RETRAIN_REQUESTED not in _emitted(ports)

    # No new batch: the labels of the drifted batch land; the monitor's check requests the retrain.
    assert monitor.check_episode(ports, cfg).blocked_by == "deferred"
    _deliver(cfg, held, max(held))
    check = monitor.check_episode(ports, cfg)
    assert check is not None and check.allowed, check
    assert _emitted(ports).count(events.RETRAIN_REQUESTED) == 1
    again = monitor.check_episode(ports, cfg)
    assert not again.allowed and again.blocked_by == "requested"
    assert _emitted(ports).count(events.RETRAIN_REQUESTED) == 1
    # The next batch continues the episode: no alert event again.
    later = monitor.monitor(ports, cfg, batches[DRIFT_AT + 1].path)[0]
    assert later.episode["transition"] in ("continued", "quiet") and events.DRIFT_DETECTED not in later.events

    # The automation starts the retrain: it runs (the request does not hold it) and learns the new world.
    result = retrain.retrain(ports, cfg, Trigger.of("event", "e-1", "episode", cfg.metric))
    assert result.status == "registered", result.message
    version = ports.registry.get_version(result.version)
    assert version.tags[state.EPISODE_TAG] == batches[DRIFT_AT].day
    change = pd.Timestamp(version.tags[state.CHANGE_POINT_TAG])
    assert int(version.tags[state.POST_CHANGE_ROWS_TAG]) > 0
    # Its window's production rows (past which a settling episode's refreshes stop), read back
    # as the policy reads them: the window but the reference.
    loop_state = state.build_loop_state(cfg, ports.store, ports.registry, None)
    attempt = next(a for a in loop_state.attempts if a.version == result.version)
    reference = pd.read_parquet(cfg.data.path("training_reference"))
    assert 0 < attempt.window_batch_rows == result.rows - int(reference[cfg.columns.target].notna().sum())
    # Its hold-out (the gate's and the next monitor's evidence) is post-change data.
    assert pd.Timestamp(version.tags[state.TRAIN_END_TAG]) >= change
    assert promote.gate_settings(cfg, version.tags).mode == cfg.gate.mode_on_alert == "improvement"
    refresh = {k: v for k, v in version.tags.items() if k != state.EPISODE_TAG}
    assert promote.gate_settings(cfg, refresh).mode == "non_inferiority"
    # A settling episode's refresh must improve on the episode's replacement too.
    settling = {**version.tags, state.EPISODE_PHASE_TAG: "settling"}
    assert promote.gate_settings(cfg, settling).mode == "improvement"


def test_a_change_only_the_late_labels_show_is_dated_by_its_labelled_batch(toy_config, tmp_path) -> None:  # noqa: ANN001
    """A concept change (labels flip, features stay): no batch drifts, and the realized drop
    shows only when the changed batch's labels land, `label_delay_days` later. The episode
    then opens dated from the changed batch, so its labelled rows already count as the
    retrain's post-change evidence (not `label_delay_days` more batches of waiting)."""
    from evergreen.simulation.stream import write_stream_from_frames
    from tests.unit.conftest import _make_frame

    delay, days, rows, change = 2, 7, 400, 3
    base = toy_config()
    cfg = in_memory(base, "concept-late")
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"rows_per_batch": rows, "label_delay_days": delay}),
            "retrain": cfg.retrain.model_copy(
                update={"cooldown_hours": 0, "min_post_change_rows": 300, "signals": ["realized_drop"]}
            ),
        }
    )
    reference, analysis = _make_frame(3000, seed=1), _make_frame(days * rows, seed=2)
    analysis["id"] += 1_000_000
    write_stream_from_frames(
        cfg, reference.drop(columns="p_true"), analysis.drop(columns="p_true"), cfg.data.root,
        drift="concept", drift_start=change, drift_params={"quantile": 0.5, "flip_probability": 1.0},
    )
    ports = memory_ports(cfg)
    assert bootstrap.bootstrap(ports, cfg).status == "registered"
    batches = io.list_batches(cfg.data.path("batches"))
    results = [monitor.monitor(ports, cfg, b.path)[0] for b in batches[: change + delay + 1]]
    assert not any(r.alert for r in results[: change + delay]), [r.message for r in results]
    opened = results[change + delay]
    assert opened.alert and opened.realized_on == batches[change].day, opened.message
    assert opened.episode["transition"] == "opened" and opened.episode["id"] == batches[change + delay].day
    began = pd.Timestamp(io.read_table(batches[change].path)[cfg.columns.timestamp].min())
    assert pd.Timestamp(opened.episode["change_point"]) == began
    assert f"the change began with batch {batches[change].day}" in opened.policy
    # The changed batch's labels are there: the episode's retrain may start now.
    check = monitor.check_episode(ports, cfg)
    assert check is not None and check.allowed, check
