"""The backtest: replay a labelled stream chunk by chunk through the real loop.

For each policy (the named ones plus the baselines `never`, `always`, `schedule:K`) the
stream is replayed from the same start, one chunk (batch file) at a time:

1. labels of chunk j are revealed on the day `data.label_delay_days` after chunk j's day;
2. a pending post-promotion review is decided (`evergreen.decisions.canary.decide_canary`, see below);
3. the champion scores the chunk (the batch files' own predictions are replaced);
4. the monitor's Great Expectations suite validates it (`evergreen.engines.validation`) and the
   NannyML calculators estimate drift and performance (`evergreen.engines.monitoring`); the
   realized metric known at that time is the one of the newest chunk whose labels have
   arrived, if the champion served it (the flow's rule, minus stale models);
5. `monitoring.decide_alerts` and `policy.decide` decide alerts and whether to retrain;
6. a retrain runs the retrain flow's steps (`window.assemble_window` with the chunks
   labelled so far, the training suite, `retraining.hold_out_recent`,
   `training.train_model`, `retraining.evaluate_model`, `retraining.monitor_reference`),
   logs the model and registers a version in a temporary MLflow store; the promote flow's
   gate (`gate.measure_model`, `gate.decide_promotion`) compares it with the champion on
   the freshest labelled rows; a version that passes becomes champion from the next chunk
   (loaded back from the registry).

The canary's traffic split is replaced by a shadow review: the promoted version serves
every row and the previous champion scores the same rows; once enough of them are
labelled, `canary.decide_canary` keeps the promotion or rolls it back
(`registry.roll_back_champion`). The first model is trained on the reference by the same
steps (the stream's own serving model is not used).

Speed: fitted NannyML calculators, GX validators and the models are kept per model and
reused; chunks served by the same model (e.g. `never` and the default policy before its
first promotion) are validated and monitored once. Nothing here imports Prefect; MLflow is
only touched when a version is registered, promoted or rolled back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters import io, registry
from evergreen.adapters.ledger import BatchLedger, BatchRecord
from evergreen.config import ModelConfig
from evergreen.decisions import policy, window
from evergreen.engines.evaluation import lower_is_better, metric_value
from evergreen.jsonable import plain
from evergreen.loop import sources, state
from evergreen.times import utc

BASELINES = ("never", "always", "schedule")
PREFETCH = 3  # chunks validated ahead by the worker processes
ACTOR = "evergreen-backtest"
EXPERIMENT = "evergreen-backtest"

logger = logging.getLogger(__name__)


class BacktestError(ValueError):
    """A stream or setting the backtest cannot replay; the message names it."""


# ----------------------------------------------------------------------------- the stream


@dataclass
class ReplayStream:
    """A labelled stream held in memory: chunks in time order and the label of every row.

    `targets[i]` is aligned with `batches[i]` (NaN where no label ever arrives);
    `reveal[i]` is the index of the first chunk at which chunk i's labels are known.
    """

    days: list[str]
    batches: list[pd.DataFrame]
    targets: list[np.ndarray]
    reveal: list[int]
    reference: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches)


def load_stream(config: ModelConfig, max_chunks: int | None = None) -> ReplayStream:
    """Read the stream under `data.root`: the training reference, the batch files in day
    order and every labels file (joined on id)."""
    cols = config.columns
    ref_path = config.data.path("training_reference")
    if not io.exists(ref_path):
        raise BacktestError(
            f"training reference {ref_path} not found: write a stream with "
            "`evergreen stream --config FILE --out DIR` and pass --data-root DIR"
        )
    files = io.list_batches(config.data.path("batches"))
    if max_chunks is not None:
        files = files[:max_chunks]
    if not files:
        raise BacktestError(
            f"no batch files under {config.data.path('batches')}; nothing to replay"
        )
    labels = io.read_labels(config.data.path("labels"))
    if labels is None or not len(labels):
        raise BacktestError(
            f"no labels under {config.data.path('labels')}: the backtest measures realized "
            "performance and retrains on labels"
        )
    missing = [c for c in (cols.id, cols.target) if c not in labels.columns]
    if missing:
        raise BacktestError(f"labels lack column(s) {missing}")
    by_id = labels.drop_duplicates(subset=cols.id, keep="last").set_index(cols.id)[cols.target]
    keep = [cols.id, cols.timestamp, *cols.features]
    batches, targets = [], []
    for f in files:
        frame = io.read_table(f.path)
        absent = [c for c in keep if c not in frame.columns]
        if absent:
            raise BacktestError(f"batch {f.path} lacks column(s) {absent}")
        frame = frame[keep].copy()
        frame[cols.timestamp] = pd.to_datetime(frame[cols.timestamp])
        batches.append(frame.reset_index(drop=True))
        targets.append(
            pd.to_numeric(frame[cols.id].map(by_id), errors="coerce").to_numpy(dtype=float)
        )
    days = [f.day for f in files]
    info_path = f"{config.data.root.rstrip('/')}/stream.json"
    return ReplayStream(
        days=days,
        batches=batches,
        targets=targets,
        reveal=_reveal_indices(days, config.data.label_delay_days),
        reference=io.read_table(ref_path),
        info=io.read_json(info_path, default={}) or {},
    )


def _reveal_indices(days: list[str], delay: int) -> list[int]:
    """Chunk i's labels arrive on day(i) + delay: the first chunk on or after that day
    (len(days) when it is past the end). Non-date names count one chunk per day."""
    try:
        dates = [date.fromisoformat(d) for d in days]
    except ValueError:
        return [i + delay for i in range(len(days))]
    out = []
    for d in dates:
        due = d + timedelta(days=delay)
        out.append(next((k for k, other in enumerate(dates) if other >= due), len(dates)))
    return out


# ----------------------------------------------------------------------------- results


@dataclass
class ChunkRow:
    """One chunk of one policy's replay (the JSON `chunks` entries)."""

    index: int
    chunk: str
    start: str | None
    end: str | None
    rows: int
    serving_version: str
    valid: bool
    validation: str
    drifted_features: list[str]
    drifted_share: float | None
    multivariate: dict[str, Any] | None
    estimated_metric: float | None
    realized_metric: float | None
    realized_signal: dict[str, Any] | None
    fired: list[str]
    alert: bool
    events: list[str]
    decision: str
    reason: str
    actions: list[str] = field(default_factory=list)
    retrained_version: str | None = None
    promoted: bool = False
    rolled_back: bool = False
    seconds: float = 0.0


@dataclass
class PolicyResult:
    """One policy's replay: the summary figures and every chunk."""

    name: str
    settings: dict[str, Any]
    mean_metric: float | None
    worst_metric: float | None
    retrains: int
    promotions: int
    rollbacks: int
    gate_failures: int
    rejected_windows: int
    alerts: int
    wall_seconds: float
    seconds_by_step: dict[str, float]
    chunks: list[ChunkRow]

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))


@dataclass
class BacktestResult:
    """Every policy's replay of one stream, plus what was replayed."""

    model: str
    metric: str
    higher_is_better: bool
    stream: dict[str, Any]
    policies: dict[str, PolicyResult]
    seconds: float
    setup_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "model": self.model,
                "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "stream": self.stream,
                "seconds": round(self.seconds, 2),
                "setup_seconds": round(self.setup_seconds, 2),
                "policies": {name: r.to_dict() for name, r in self.policies.items()},
            }
        )


# ----------------------------------------------------------------------------- shared state


@dataclass
class _ModelEntry:
    """A trained model with everything the monitor needs when it serves."""

    key: str
    model: Any
    reference: pd.DataFrame
    train_end: pd.Timestamp
    fitted: Any = None
    suite: Any = None
    training_suite: Any = None


@dataclass
class _ChunkView:
    """What one model's serving of one chunk looks like to the monitor (shared by policies)."""

    prediction: np.ndarray
    score: np.ndarray
    valid: bool
    validation: str
    report: Any  # MonitorReport without raw NannyML results, None when invalid
    realized: float | None


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, step: str, started: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started


class _Shared:
    """State shared by every policy's replay: stream, store, models and per-chunk views."""

    def __init__(
        self,
        config: ModelConfig,
        stream: ReplayStream,
        store: Path,
        log: Callable[[str], None],
        validation_workers: int,
    ) -> None:
        from evergreen.adapters import tracking

        self.config = config
        self.stream = stream
        self.log = log
        mlflow_cfg = config.mlflow.model_copy(
            update={
                "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
                "artifact_root": str(store / "mlartifacts"),
            }
        )
        self.mlflow = mlflow_cfg
        tracking.connect(mlflow_cfg)
        self.experiment_id = tracking.ensure_experiment(mlflow_cfg, EXPERIMENT)
        self.models: dict[str, _ModelEntry] = {}
        self.views: dict[tuple[str, int], _ChunkView] = {}
        self.pending: dict[tuple[str, int], tuple[pd.DataFrame, Any, Any]] = {}
        self.pool = _validation_pool(validation_workers) if validation_workers else None
        self.trainings: dict[str, tuple[_ModelEntry, Any]] = {}
        self.ends = [utc(b[config.columns.timestamp].max()) for b in stream.batches]
        self.starts = [utc(b[config.columns.timestamp].min()) for b in stream.batches]

    # -- models

    def entry(self, model: Any, reference: pd.DataFrame, train_end: pd.Timestamp) -> _ModelEntry:
        key = hashlib.sha256(model.to_bytes()).hexdigest()
        if key not in self.models:
            self.models[key] = _ModelEntry(key, model, reference, train_end)
        return self.models[key]

    def monitor_of(self, entry: _ModelEntry, timer: _Timer) -> None:
        """Fit the monitor (NannyML) and derive the suites (GX) of a model, once."""
        from evergreen.engines import monitoring, validation
        from evergreen.loop import retraining

        if entry.fitted is None:
            t = time.perf_counter()
            entry.fitted = monitoring.fit_monitor(entry.reference, self.config)
            timer.add("fit_monitor", t)
        if entry.suite is None:
            t = time.perf_counter()
            entry.suite = validation.derive_suite(entry.reference, self.config)
            entry.training_suite = retraining.training_suite(entry.suite)
            timer.add("derive_suite", t)

    # -- chunks

    def prefetch(
        self, entry: _ModelEntry, version: str, chunks: Sequence[int], timer: _Timer
    ) -> None:
        """Score chunks and start validating them in the worker process, ahead of time (the
        champion is assumed to stay; a prefetched view of a model that no longer serves is
        kept for the policies that still serve it)."""
        if self.pool is None:
            return
        self.monitor_of(entry, timer)
        for i in chunks:
            key = (entry.key, i)
            if i >= len(self.stream.batches) or key in self.views or key in self.pending:
                continue
            served, preds = self._serve(entry, version, i, timer)
            future = self.pool.submit(
                _validate_served,
                entry.suite.model_dump_json(),
                served,
                self.stream.days[i],
                self.ends[i].tz_localize(None),
            )
            self.pending[key] = (served, preds, future)

    def view(self, entry: _ModelEntry, version: str, i: int, timer: _Timer) -> _ChunkView:
        """Chunk i served by `entry`: scored, validated, monitored (cached per model)."""
        key = (entry.key, i)
        if key in self.views:
            return self.views[key]
        from evergreen.engines import monitoring, validation

        self.monitor_of(entry, timer)
        t = time.perf_counter()
        checked = None
        if key in self.pending:
            served, preds, future = self.pending.pop(key)
            try:
                checked = future.result()
            except Exception as exc:  # a worker died: validate here from now on
                self.log(
                    f"validation worker failed ({type(exc).__name__}: {exc}); validating in this process"
                )
                self.close()
            timer.add("validate_wait", t)
        if checked is None:
            served, preds = self._serve(entry, version, i, timer)
            t = time.perf_counter()
            checked = validation.validate_batch(
                served, entry.suite, self.stream.days[i], now=self.ends[i].tz_localize(None)
            )
            timer.add("validate", t)
        report = None
        if checked.success:
            t = time.perf_counter()
            report = dataclasses.replace(
                monitoring.compute_monitor(entry.fitted, served, None), results={}
            )
            timer.add("monitor", t)
        score = preds.probability if preds.probability is not None else preds.prediction
        y = self.stream.targets[i]
        labelled = ~np.isnan(y)
        realized = _metric(y[labelled], score[labelled], self.config) if labelled.any() else None
        view = _ChunkView(
            prediction=np.asarray(preds.prediction),
            score=np.asarray(score, dtype=float),
            valid=checked.success,
            validation="" if checked.success else checked.summary(),
            report=report,
            realized=realized,
        )
        self.views[key] = view
        return view

    def _serve(
        self, entry: _ModelEntry, version: str, i: int, timer: _Timer
    ) -> tuple[pd.DataFrame, Any]:
        """The chunk as the champion served it: its predictions replace the stream's."""
        from evergreen.simulation.serving import serve_batch

        t = time.perf_counter()
        served, preds = serve_batch(entry.model, self.stream.batches[i], version, self.config.columns)
        timer.add("score", t)
        return served, preds

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    # -- training

    def train(self, frame: pd.DataFrame, timer: _Timer) -> tuple[_ModelEntry, Any]:
        """The retrain flow's steps on a window frame: hold out, train, evaluate, reference.
        Identical windows give identical models (seeded): trained once."""
        from evergreen.engines import snapshot, training
        from evergreen.loop import retraining

        t = time.perf_counter()
        digest = snapshot.dataset_digest(frame)
        timer.add("digest", t)
        if digest in self.trainings:
            return self.trainings[digest]
        t = time.perf_counter()
        holdout = retraining.hold_out_recent(frame, self.config)
        model = training.train_model(holdout.train, self.config)
        evaluation = retraining.evaluate_model(model, holdout.evaluation, self.config)
        reference = retraining.monitor_reference(
            model, holdout.evaluation, self.config, version="candidate"
        )
        train_end = utc(holdout.train[self.config.columns.timestamp].max())
        timer.add("train", t)
        entry = self.entry(model, reference, train_end)
        self.trainings[digest] = (entry, evaluation)
        return entry, evaluation

    def labelled_rows(
        self, i_now: int, chunks: Sequence[int], valid: Callable[[int], bool]
    ) -> list[window.LabelledBatch]:
        """The chunks' rows whose labels are known at chunk `i_now`, as the window expects."""
        cols = self.config.columns
        out = []
        for j in chunks:
            day = self.stream.days[j]
            if not valid(j):
                out.append(
                    window.LabelledBatch(
                        day, pd.DataFrame(), valid=False, reason="rejected by validation"
                    )
                )
                continue
            if self.stream.reveal[j] > i_now:
                continue
            y = self.stream.targets[j]
            has = ~np.isnan(y)
            frame = self.stream.batches[j].loc[has].copy()
            frame[cols.target] = y[has]
            out.append(window.LabelledBatch(day, frame.reset_index(drop=True)))
        return out


# ----------------------------------------------------------------------------- the replay's store


class ReplayStore:
    """The replayed stream as the loop's batch store (`adapters.ports.BatchStore`) at the
    replay clock: the chunks served so far, the labels delivered by then and the ledger the
    monitor wrote. `state.build_loop_state` reads it as it reads the files in production."""

    def __init__(self, shared: _Shared) -> None:
        self.s = shared
        self.now = -1
        self.served_version: dict[int, str] = {}
        self.ledger = BatchLedger()
        self._labels: dict[int, pd.DataFrame | None] = {}

    def list_batches(self) -> list[io.BatchFile]:
        days = self.s.stream.days
        return [io.BatchFile(path=f"replay:{j}", day=days[j], index=j) for j in range(self.now + 1)]

    def read_batch(self, batch: io.BatchFile, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The chunk's rows; with the serving version as the scoring service logs it."""
        frame = self.s.stream.batches[batch.index]
        version_col = self.s.config.columns.model_version
        if batch.index in self.served_version:
            frame = frame.assign(**{version_col: self.served_version[batch.index]})
        return frame[list(columns)] if columns is not None else frame

    def read_labels(self, up_to_day: str | None = None) -> pd.DataFrame | None:
        """Labels delivered by the replay clock (`up_to_day` is the clock here)."""
        if self.now not in self._labels:
            cols, stream = self.s.config.columns, self.s.stream
            parts = []
            for j in range(len(stream.days)):
                if stream.reveal[j] > self.now:
                    continue
                y = stream.targets[j]
                has = ~np.isnan(y)
                parts.append(pd.DataFrame({cols.id: stream.batches[j][cols.id].to_numpy()[has], cols.target: y[has]}))
            self._labels = {self.now: pd.concat(parts, ignore_index=True) if parts else None}
        return self._labels[self.now]

    def read_ledger(self) -> BatchLedger:
        return self.ledger

    def record_batch(self, record: BatchRecord) -> None:
        self.ledger = self.ledger.with_record(record)

    def valid(self, j: int) -> bool:
        record = self.ledger.batches.get(self.s.stream.days[j])
        return record is None or record.valid


# ----------------------------------------------------------------------------- one policy


@dataclass
class _Review:
    """A promotion under (shadow) review: the new version against the one it replaced."""

    version: str
    previous: _ModelEntry
    previous_version: str
    since: int


class _Replay:
    def __init__(self, shared: _Shared, pol: policy.Policy, bootstrap: _Bootstrap) -> None:

        self.s = shared
        self.policy = pol
        self.cfg = shared.config
        self.name = f"{shared.config.mlflow.model_name}-backtest-{_slug(pol.name)}"
        self.timer = _Timer()
        version = registry.create_version(
            self.name,
            bootstrap.run.model_uri,
            bootstrap.run.run_id,
            {
                **_tags(bootstrap.entry, bootstrap.clock, "bootstrap"),
                state.WINDOW_END_TAG: str(bootstrap.clock),
                state.BOOTSTRAP_TAG: "true",
                registry.STATUS_TAG: "champion",
            },
        )
        registry.move_alias(
            self.name,
            registry.CHAMPION,
            version.version,
            "bootstrap: trained on the reference",
            ACTOR,
        )
        self.champion = bootstrap.entry
        self.champion_version = version.version
        self.store = ReplayStore(shared)
        self.registry = registry.Registry(self.name)
        self.last_retrain_chunk = -1
        self.review: _Review | None = None
        self.served: dict[int, tuple[str, _ModelEntry]] = {}
        self.rows: list[ChunkRow] = []
        self._previous_scores: dict[tuple[str, int], Any] = {}
        self.counts = {
            "retrains": 0,
            "promotions": 0,
            "rollbacks": 0,
            "gate_failures": 0,
            "rejected_windows": 0,
            "alerts": 0,
        }

    def run(self) -> PolicyResult:
        began = time.perf_counter()
        n = len(self.s.stream.days)
        for i in range(n):
            t = time.perf_counter()
            actions, rolled_back = self._review(i)
            self.s.prefetch(
                self.champion, self.champion_version, range(i, i + PREFETCH + 1), self.timer
            )
            row = self._chunk(i, actions)
            row.rolled_back = rolled_back
            row.seconds = round(time.perf_counter() - t, 3)
            self.rows.append(row)
            if (i + 1) % 10 == 0 or i == n - 1:
                self.s.log(
                    f"  {self.policy.name}: chunk {i + 1}/{n} ({self.s.stream.days[i]}), "
                    f"{self.counts['retrains']} retrain(s), {time.perf_counter() - began:.0f} s"
                )
        realized = [r.realized_metric for r in self.rows if r.realized_metric is not None]
        worst = (max if lower_is_better(self.cfg.metric) else min)(realized) if realized else None
        return PolicyResult(
            name=self.policy.name,
            settings=self.policy.settings(),
            mean_metric=float(np.mean(realized)) if realized else None,
            worst_metric=worst,
            wall_seconds=round(time.perf_counter() - began, 2),
            seconds_by_step={k: round(v, 2) for k, v in sorted(self.timer.seconds.items())},
            chunks=self.rows,
            **self.counts,
        )

    # -- per chunk

    def _chunk(self, i: int, actions: list[str]) -> ChunkRow:
        from evergreen.engines import monitoring

        s, cfg = self.s, self.cfg
        self.store.now = i
        view = s.view(self.champion, self.champion_version, i, self.timer)
        self.served[i] = (self.champion_version, self.champion)
        self.store.served_version[i] = self.champion_version
        report, signal = view.report, None
        alerts = None
        if report is not None:
            signal = self._realized_signal(i)
            if signal is not None:
                report = dataclasses.replace(report, realized_metric=signal["estimate"])
            alerts = monitoring.decide_alerts(report, cfg)
        obs = policy.ChunkObservation(
            chunk=s.stream.days[i],
            valid=view.valid,
            alerts=alerts,
            rows=len(s.stream.batches[i]),
            reason=view.validation,
        )
        t = time.perf_counter()
        decision = policy.decide(obs, self._state(i), self.policy)
        self.timer.add("policy", t)
        self.store.record_batch(
            BatchRecord(
                day=s.stream.days[i], path=f"replay:{i}", valid=view.valid, message=view.validation,
                signals=list(decision.fired), events=sorted(decision.events),
            )
        )
        self.counts["alerts"] += int(decision.alert)
        row = ChunkRow(
            index=i,
            chunk=s.stream.days[i],
            start=s.starts[i].isoformat(),
            end=s.ends[i].isoformat(),
            rows=len(s.stream.batches[i]),
            serving_version=self.champion_version,
            valid=view.valid,
            validation=view.validation,
            drifted_features=list(report.drifted_features) if report else [],
            drifted_share=(len(report.drifted_features) / max(len(report.features), 1))
            if report
            else None,
            multivariate=(
                {
                    "value": report.multivariate.value,
                    "upper": report.multivariate.upper,
                    "alert": report.multivariate.alert,
                }
                if report is not None and report.multivariate is not None
                else None
            ),
            estimated_metric=report.estimated_metric.value if report else None,
            realized_metric=view.realized,
            realized_signal={"value": signal["value"], "chunk": signal["chunk"]}
            if signal
            else None,
            fired=list(decision.fired),
            alert=decision.alert,
            events=sorted(decision.events),
            decision="retrain" if decision.retrain else (decision.blocked_by or "none"),
            reason=decision.reason,
            actions=actions,
        )
        if decision.retrain:
            self._retrain(i, decision, row)
        return row

    def _state(self, i: int) -> policy.LoopState:
        """The loop state at chunk i, built as production builds it (`state.build_loop_state`
        on the replay's store and registry); `chunks_since_retrain` drives `schedule:K`."""
        t = time.perf_counter()
        built = state.build_loop_state(self.cfg, self.store, self.registry, self.s.ends[i], self.s.stream.days[i])
        self.timer.add("state", t)
        return dataclasses.replace(built, chunks_since_retrain=i - self.last_retrain_chunk)

    def _realized_signal(self, i: int) -> dict[str, Any] | None:
        """The realized metric the monitor judges at chunk i (`sources.realized_on_latest_labelled`,
        the monitor flow's rule), on the replay's store: the newest chunk whose labels are
        known, as long as the current champion served it."""
        from evergreen.engines.monitoring import MetricEstimate

        s = self.s

        def realize(batch: io.BatchFile) -> MetricEstimate | None:
            version, entry = self.served[batch.index]
            value = s.views[(entry.key, batch.index)].realized
            if value is None:
                return None
            return MetricEstimate(
                metric=self.cfg.metric,
                value=value,
                reference_value=self.champion.fitted.reference_metric,
                lower_threshold=None,
                upper_threshold=None,
                alert=False,
                kind="realized",
                chunk=batch.day,
            )

        found = sources.realized_on_latest_labelled(
            self.cfg, self.store, s.stream.days[i], self.store.read_labels(), realize, self.champion_version
        )
        if found is None:
            return None
        return {"value": found.metric.value, "chunk": found.day, "estimate": found.metric}

    # -- retrain, gate, promotion

    def _retrain(self, i: int, decision: policy.PolicyDecision, row: ChunkRow) -> None:
        from evergreen.decisions import gate
        from evergreen.engines import validation

        s, cfg = self.s, self.cfg
        now = s.ends[i]
        t = time.perf_counter()
        chunks = self._window_chunks(i)
        win = window.assemble_window(
            s.stream.reference,
            s.labelled_rows(i, chunks, self.store.valid),
            cfg.retrain,
            cfg.columns,
            now=now,
        )
        self.timer.add("window", t)
        t = time.perf_counter()
        checked = validation.validate_batch(
            win.frame,
            self.champion.training_suite,
            f"window@{s.stream.days[i]}",
            now=now.tz_localize(None),
        )
        self.timer.add("validate_window", t)
        self.last_retrain_chunk = i
        if not checked.success:
            self.counts["rejected_windows"] += 1
            row.actions.append(f"training window rejected: {checked.summary()}")
            return
        candidate, evaluation = s.train(win.frame, self.timer)
        t = time.perf_counter()
        run = _log_candidate(s, candidate, evaluation, win, decision.reason)
        tags = {
            **_tags(candidate, now, decision.reason),
            state.WINDOW_END_TAG: str(win.time_max),
            registry.STATUS_TAG: "candidate",
        }
        version = registry.create_version(self.name, run.model_uri, run.run_id, tags)
        registry.move_alias(
            self.name, registry.CHALLENGER, version.version, "retrained candidate", ACTOR
        )
        self.timer.add("register", t)
        self.counts["retrains"] += 1
        row.retrained_version = version.version
        row.actions.append(
            f"retrained v{version.version} on {win.rows:,} rows ({win.batch_rows:,} from {len(win.sources)} chunk(s))"
        )

        t = time.perf_counter()
        fresh = sources.select_fresh_rows(
            s.labelled_rows(i, range(i + 1), self.store.valid), cfg, candidate.train_end
        )
        if (reason := sources.gate_evidence_shortfall(len(fresh), cfg)) is not None:
            self.timer.add("gate", t)
            registry.reject_challenger(
                self.name, version.version, {"passed": False}, [reason], ACTOR, None
            )
            self.counts["gate_failures"] += 1
            row.actions.append(f"gate not run: {reason}")
            return
        challenger = gate.measure_model(candidate.model, fresh, cfg, version.version)
        champion = gate.measure_model(self.champion.model, fresh, cfg, self.champion_version)
        verdict = gate.decide_promotion(
            challenger,
            champion,
            fresh[cfg.columns.target].to_numpy(),
            cfg.gate,
            cfg.problem_type,
            cfg.metric,
        )
        self.timer.add("gate", t)
        t = time.perf_counter()
        if not verdict.passed:
            registry.reject_challenger(
                self.name, version.version, verdict.to_dict(), verdict.reasons, ACTOR, None
            )
            self.timer.add("register", t)
            self.counts["gate_failures"] += 1
            row.actions.append(f"gate failed: {'; '.join(verdict.reasons)}")
            return
        if self.review is not None:  # a baseline retrained during a review: it ends there
            registry.reject_canary(
                self.name, self.review.version, f"superseded by v{version.version}", ACTOR, None
            )
        # The canary serves every row (a shadow review: the champion scores the same rows)
        # while `canary` is set, so the policy sees a candidate under review as in production.
        registry.start_canary(self.name, version.version, verdict.to_dict(), ACTOR, None)
        previous, previous_version = (
            (self.review.previous, self.review.previous_version)
            if self.review is not None
            else (self.champion, self.champion_version)
        )
        loaded = registry.load_model_uri(f"models:/{self.name}/{version.version}")
        self.timer.add("register", t)
        if hashlib.sha256(loaded.to_bytes()).hexdigest() != candidate.key:
            raise BacktestError(
                f"version {version.version} loaded from the registry differs from the trained model"
            )
        self.champion, self.champion_version = candidate, version.version
        self.counts["promotions"] += 1
        row.promoted = True
        if self.review is not None:
            row.actions.append(f"review of v{self.review.version} superseded")
        self.review = _Review(version.version, previous, previous_version, since=i + 1)
        row.actions.append(
            f"gate passed: v{version.version} promoted over v{previous_version} (serves from the next chunk)"
        )

    def _window_chunks(self, i: int) -> list[int]:
        """Chunks that can reach the window (a sliding window by days never needs older ones)."""
        pol, s = self.cfg.retrain, self.s
        if pol.window == "sliding" and pol.window_days is not None and pol.window_rows is None:
            start = s.ends[i] - pd.Timedelta(days=pol.window_days + 1)
            return [j for j in range(i + 1) if s.ends[j] >= start]
        return list(range(i + 1))

    def _review(self, i: int) -> tuple[list[str], bool]:
        """Decide a pending post-promotion review with the labels known at chunk i; returns
        what happened and whether the promotion was rolled back."""
        from evergreen.adapters.predlog import ALIAS_COLUMN
        from evergreen.decisions import canary

        r = self.review
        if r is None:
            return [], False
        s, cfg, cols = self.s, self.cfg, self.cfg.columns
        t = time.perf_counter()
        logs: list[pd.DataFrame] = []
        champion_logs: list[pd.DataFrame] = []
        labels: list[pd.DataFrame] = []
        for j in range(r.since, i):
            if s.stream.reveal[j] > i:
                continue
            version, entry = self.served[j]
            if version != r.version:
                continue
            y = s.stream.targets[j]
            has = ~np.isnan(y)
            ids = s.stream.batches[j][cols.id].to_numpy()
            served = s.views[(entry.key, j)]
            if (r.previous.key, j) not in self._previous_scores:
                self._previous_scores[(r.previous.key, j)] = r.previous.model.predict(
                    s.stream.batches[j]
                )
            old = self._previous_scores[(r.previous.key, j)]
            old_score = old.probability if old.probability is not None else old.prediction
            for sink, version_, alias, pred, score in (
                (logs, r.version, registry.CANARY, served.prediction, served.score),
                (
                    champion_logs,
                    r.previous_version,
                    registry.CHAMPION,
                    np.asarray(old.prediction),
                    np.asarray(old_score),
                ),
            ):
                frame = pd.DataFrame(
                    {
                        cols.id: ids,
                        cols.prediction: pred,
                        cols.model_version: version_,
                        ALIAS_COLUMN: alias,
                    }
                )
                if cols.probability is not None:
                    frame[cols.probability] = score
                sink.append(frame)
            labels.append(pd.DataFrame({cols.id: ids[has], cols.target: y[has]}))
        if not logs:
            self.timer.add("review", t)
            return [], False
        labels_frame = pd.concat(labels, ignore_index=True) if labels else None
        new = canary.collect_arm_evidence(
            pd.concat(logs, ignore_index=True), labels_frame, cfg, r.version, registry.CANARY
        )
        old = canary.collect_arm_evidence(
            pd.concat(champion_logs, ignore_index=True),
            labels_frame,
            cfg,
            r.previous_version,
            registry.CHAMPION,
        )
        verdict = canary.decide_canary(new, old, cfg.canary, cfg.problem_type, cfg.metric)
        self.timer.add("review", t)
        if verdict.outcome == canary.PENDING:
            return [], False
        self.review = None
        t = time.perf_counter()
        why = "backtest review: " + "; ".join(verdict.reasons)[:400]
        if verdict.outcome == canary.PROMOTED:
            registry.promote_canary(self.name, r.version, why, ACTOR, None)
            self.timer.add("register", t)
            return [f"review kept v{r.version}: {verdict.reasons[0]}"], False
        registry.reject_canary(self.name, r.version, why, ACTOR, None)
        self.timer.add("register", t)
        self.champion, self.champion_version = r.previous, r.previous_version
        self.counts["rollbacks"] += 1
        return [
            f"review rolled v{r.version} back to v{r.previous_version}: {verdict.reasons[0]}"
        ], True


# ----------------------------------------------------------------------------- running


def run_backtest(
    config: ModelConfig,
    policies: Sequence[str] = ("default",),
    *,
    baselines: bool = True,
    max_chunks: int | None = None,
    workdir: str | None = None,
    validation_workers: int = 2,
    check_latency: bool = False,
    log: Callable[[str], None] = print,
) -> BacktestResult:
    """Replay the stream under `config.data.root` for each policy (plus the baselines
    `never`, `always` and `schedule` unless `baselines` is False) on a temporary MLflow
    store (in `workdir`, default a temporary folder removed at the end).

    `validation_workers` processes validate the next chunks with Great Expectations while
    this one monitors the current chunk (0: everything in this process).

    The gate's latency check is off unless `check_latency`: latency belongs to the serving
    machine, and a replay that shares its machine with other work would measure that work
    (every other gate check applies as configured)."""
    began = time.perf_counter()
    if not check_latency:
        config = config.model_copy(
            update={"gate": config.gate.model_copy(update={"max_latency_ms": math.inf})}
        )
    names = list(dict.fromkeys([*policies, *(BASELINES if baselines else ())]))
    chosen = [policy.Policy.named(n, config.retrain) for n in names]
    if len({p.name for p in chosen}) != len(chosen):
        chosen = list({p.name: p for p in chosen}.values())
    stream = load_stream(config, max_chunks)
    log(
        f"backtest of {config.name}: {len(stream.days)} chunks ({stream.days[0]}..{stream.days[-1]}), "
        f"{stream.rows:,} rows, labels after {config.data.label_delay_days} day(s); "
        f"policies {[p.name for p in chosen]}"
    )
    store = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="evergreen-backtest-"))
    store.mkdir(parents=True, exist_ok=True)
    shared = None
    try:
        shared = _Shared(config, stream, store, log, validation_workers)
        timer = _Timer()
        bootstrap = _bootstrap(shared, timer)
        setup = time.perf_counter() - began
        log(f"bootstrap model trained on {len(stream.reference):,} reference rows ({setup:.0f} s)")
        results: dict[str, PolicyResult] = {}
        for p in chosen:
            log(f"replaying policy {p.name} ...")
            results[p.name] = _Replay(shared, p, bootstrap).run()
    finally:
        if shared is not None:
            shared.close()
        if workdir is None:
            shutil.rmtree(store, ignore_errors=True)
    return BacktestResult(
        model=config.name,
        metric=config.metric,
        higher_is_better=config.higher_is_better,
        stream={
            "root": config.data.root,
            "chunks": len(stream.days),
            "first": stream.days[0],
            "last": stream.days[-1],
            "rows": stream.rows,
            "label_delay_days": config.data.label_delay_days,
            "reference_rows": len(stream.reference),
            "drift": stream.info.get("drift"),
            "drift_start": stream.info.get("drift_start_date"),
            "drift_start_index": stream.info.get("drift_start_index"),
            "gate_latency_checked": check_latency,
        },
        policies=results,
        seconds=time.perf_counter() - began,
        setup_seconds=setup,
    )


@dataclass(frozen=True)
class _LoggedRun:
    run_id: str
    model_uri: str


@dataclass(frozen=True)
class _Bootstrap:
    entry: _ModelEntry
    clock: pd.Timestamp
    run: _LoggedRun


def _bootstrap(shared: _Shared, timer: _Timer) -> _Bootstrap:
    """The first model: the retrain steps on the reference alone, logged once."""
    cfg = shared.config
    policy_cfg = cfg.retrain.model_copy(update={"include_reference": True})
    win = window.assemble_window(shared.stream.reference, [], policy_cfg, cfg.columns)
    if win.rows < 20:
        raise BacktestError(
            f"the training reference has {win.rows} labelled rows; the first model needs more"
        )
    clock = utc(win.time_max if win.time_max is not None else shared.starts[0])
    entry, evaluation = shared.train(win.frame, timer)
    shared.monitor_of(entry, timer)
    run = _log_candidate(shared, entry, evaluation, win, "bootstrap: trained on the reference")
    return _Bootstrap(entry, clock, run)


def _log_candidate(
    shared: _Shared, entry: _ModelEntry, evaluation: Any, win: window.TrainingWindow, reason: str
) -> _LoggedRun:
    """One MLflow run per trained model: its metrics and the model in XGBoost's format."""
    import mlflow

    from evergreen.adapters import tracking

    cfg = shared.config
    with mlflow.start_run(
        experiment_id=shared.experiment_id, run_name=f"backtest-{entry.key[:12]}"
    ) as run:
        mlflow.log_params(
            {"window.rows": win.rows, "window.batch_rows": win.batch_rows, "reason": reason[:400]}
        )
        tracking.log_metrics(evaluation.flat_metrics())
        logged = registry.log_model(entry.model, win.frame[list(cfg.columns.features)].head(5))
    return _LoggedRun(run.info.run_id, logged.model_uri)


def _tags(entry: _ModelEntry, clock: pd.Timestamp, reason: str) -> dict[str, str]:
    return {
        "evergreen.train_end": str(entry.train_end),
        "evergreen.data_clock": str(clock),
        "evergreen.trigger": "backtest",
        "evergreen.trigger.reason": reason[:4000],
    }


def _validation_pool(workers: int) -> Any:
    """Worker processes for Great Expectations, started now so that their imports overlap
    the bootstrap. Spawned, not forked: this process holds threads (XGBoost, MLflow)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    for _ in range(workers):
        pool.submit(_warm_up)
    return pool


def _warm_up() -> None:
    from evergreen.telemetry import disable_telemetry

    disable_telemetry()
    import evergreen.engines.gx  # noqa: F401


def _validate_served(
    suite_json: str, served: pd.DataFrame, batch_id: str, now: pd.Timestamp
) -> Any:
    """Runs in the worker: the monitor's validation of one served chunk (validators are
    kept per suite by `validation.validate_batch`)."""
    from evergreen.engines import validation

    return validation.validate_batch(
        served, validation.SuiteSpec.model_validate_json(suite_json), batch_id, now=now
    )


# ----------------------------------------------------------------------------- reporting


def format_table(result: BacktestResult) -> str:
    """The per-policy summary as a text table, read against the `always` baseline."""
    always = result.policies.get("always")
    head = f"{'policy':14} {'mean':>7} {'worst':>7} {'/always':>8} {'retrains':>8} {'/always':>8} {'promo':>5} {'rollbk':>6} {'alerts':>6} {'wall s':>7}"
    lines = [
        f"{result.model}: {result.metric} per chunk, {result.stream['chunks']} chunks",
        head,
        "-" * len(head),
    ]
    for r in result.policies.values():
        mean_ratio = _ratio(
            r.mean_metric, always.mean_metric if always else None, result.higher_is_better
        )
        retrain_ratio = (r.retrains / always.retrains) if always and always.retrains else None
        lines.append(
            f"{r.name:14} {_f(r.mean_metric):>7} {_f(r.worst_metric):>7} {_f(mean_ratio):>8} {r.retrains:>8} "
            f"{_f(retrain_ratio, 2):>8} {r.promotions:>5} {r.rollbacks:>6} {r.alerts:>6} {r.wall_seconds:>7.1f}"
        )
    return "\n".join(lines)


def plot(result: BacktestResult, path: str) -> None:
    """Realized (solid) and estimated (dashed) metric per chunk, one panel per policy;
    retrains marked (green: promoted, grey: not promoted), rollbacks as red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.policies)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n + 0.6), sharex=True, squeeze=False)
    start = result.stream.get("drift_start_index")
    for ax, r in zip(axes[:, 0], result.policies.values(), strict=True):
        x = [c.index for c in r.chunks]
        ax.plot(
            x,
            [c.realized_metric for c in r.chunks],
            color="tab:blue",
            lw=1.4,
            label=f"realized {result.metric}",
        )
        ax.plot(
            x,
            [c.estimated_metric for c in r.chunks],
            color="tab:orange",
            lw=1.0,
            ls="--",
            label=f"estimated {result.metric}",
        )
        for c in r.chunks:
            if c.retrained_version is not None or c.decision == "retrain":
                ax.axvline(c.index, color="tab:green" if c.promoted else "0.6", lw=0.8, alpha=0.8)
            if any(a.startswith("review rolled") for a in c.actions):
                ax.plot([c.index], [c.realized_metric], "x", color="tab:red", ms=8)
        if start is not None:
            ax.axvline(start, color="tab:red", ls=":", lw=1.0)
        ax.set_title(
            f"{r.name}: mean {_f(r.mean_metric)}, worst {_f(r.worst_metric)}, {r.retrains} retrains, "
            f"{r.promotions} promotions, {r.rollbacks} rollbacks",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel(result.metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel(
        "chunk (vertical lines: retrains, green = promoted; dotted red: injected drift)"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- helpers


def _metric(y: np.ndarray, score: np.ndarray, config: ModelConfig) -> float | None:
    value = metric_value(y, score, config.problem_type, config.metric)
    return float(value) if value is not None and math.isfinite(value) else None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _ratio(value: float | None, base: float | None, higher_is_better: bool) -> float | None:
    if value is None or not base:
        return None
    return value / base if higher_is_better else base / value


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
