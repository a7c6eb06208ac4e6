"""A labelled stream replayed through the loop, day by day, as production lives it.

Each chunk (one batch of the stream) on the replay's clock:

1. the labels files due that day are delivered (`data.labels`);
2. a canary under review is reviewed (the `canary-review` deployment's hourly schedule);
3. the scoring service serves the chunk: rows routed by id between `champion` and `canary`
   (`decisions.routing`, the service's own rule), predictions written as the day's batch
   file and appended to the prediction log;
4. the monitor runs on the batch;
5. the automations of `prefect.yaml` fire on what it emitted: an alert event starts a
   retrain (trigger `event`), a registered version starts the gate, a performance alert
   within a day of a promotion starts a verified rollback. The backtest's baselines replace
   the event trigger by a schedule (`always`: every chunk, `schedule:K`: every K chunks,
   `never`: no retrain).

How the steps run is a `Loop`: `StepLoop` calls `evergreen.loop`'s step functions on a set of
ports (the backtest: in memory); the differential test passes the real flows. Everything the
loop decides is decided by the steps; this module only moves the clock, serves and delivers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from evergreen import events
from evergreen.adapters import io
from evergreen.adapters.ports import Ports
from evergreen.aliases import CANARY, CHAMPION
from evergreen.columns import ALIAS_COLUMN, SERVED_AT_COLUMN
from evergreen.config import ModelConfig
from evergreen.decisions import policy as policies
from evergreen.decisions.routing import route_many
from evergreen.lineage import Trigger
from evergreen.reports import MonitorResult, PromotionResult, RetrainResult


class Loop(Protocol):
    """The loop's steps as the replay triggers them."""

    def bootstrap(self) -> RetrainResult: ...

    def monitor(self, batch_path: str) -> MonitorResult: ...

    def retrain(self, trigger: Trigger, policy_name: str) -> RetrainResult: ...

    def promote(self, version: str) -> PromotionResult: ...

    def review(self) -> PromotionResult: ...

    def rollback(self, from_version: str, reason: str) -> PromotionResult: ...


@dataclass
class StepLoop:
    """`evergreen.loop`'s steps on `ports`, each part run by `run` (plain calls)."""

    ports: Ports
    config: ModelConfig
    run: Any = None
    actor: Any = None

    def __post_init__(self) -> None:
        from evergreen.loop.common import Actor
        from evergreen.loop.runner import DIRECT

        self.run = self.run or DIRECT
        self.actor = self.actor or Actor("evergreen-replay")

    def bootstrap(self) -> RetrainResult:
        from evergreen.loop.bootstrap import bootstrap

        return bootstrap(self.ports, self.config, run=self.run, actor=self.actor)

    def monitor(self, batch_path: str) -> MonitorResult:
        from evergreen.loop.monitor import monitor

        (result,) = monitor(self.ports, self.config, batch_path, run=self.run)
        return result

    def retrain(self, trigger: Trigger, policy_name: str) -> RetrainResult:
        from evergreen.loop.retrain import retrain

        return retrain(self.ports, self.config, trigger, run=self.run, actor=self.actor, policy_name=policy_name)

    def promote(self, version: str) -> PromotionResult:
        from evergreen.loop.promote import promote

        return promote(self.ports, self.config, version, run=self.run, actor=self.actor).result

    def review(self) -> PromotionResult:
        from evergreen.loop.promote import review_canary

        return review_canary(self.ports, self.config, run=self.run, actor=self.actor).result

    def rollback(self, from_version: str, reason: str) -> PromotionResult:
        from evergreen.loop.promote import rollback

        outcome = rollback(
            self.ports, self.config, None, from_version, reason, True, run=self.run, actor=self.actor
        )
        return outcome.result


@dataclass
class Chunk:
    """One chunk of the stream: its day, rows (id, timestamp, features) and labels."""

    day: str
    frame: pd.DataFrame


@dataclass
class ChunkOutcome:
    """What happened on one chunk: the monitor's result and every step the automations ran."""

    index: int
    day: str
    served: pd.DataFrame
    monitor: MonitorResult
    champion: str
    canary: str | None
    review: PromotionResult | None = None
    retrain: RetrainResult | None = None
    gate: PromotionResult | None = None
    rollback: PromotionResult | None = None
    trigger: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Replay:
    """Replays `chunks` through `loop`; `ports` are where the replay serves and delivers
    (the loop's own store, registry and prediction log)."""

    config: ModelConfig
    ports: Ports
    loop: Loop
    labels: Sequence[tuple[str, pd.DataFrame]]  # (delivery day, labels file), in day order
    policy: policies.Policy
    set_clock: Callable[[pd.Timestamp], None] = lambda _: None
    # When a row is served (the prediction log's `served_at`): the replay's clock on
    # in-memory ports; the wall clock where the registry stamps alias moves with it.
    now: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC")
    delivered: set[str] = field(default_factory=set)
    last_retrain: int = -1
    last_promotion: tuple[int, str] | None = None
    _models: dict[str, Any] = field(default_factory=dict)

    def bootstrap(self) -> RetrainResult:
        """The first model: the bootstrap step (trained on the reference alone), then its gate
        (which finds it already champion)."""
        result = self.loop.bootstrap()
        if result.status != "registered":
            raise RuntimeError(f"the first model could not be trained: {result.message}")
        self.loop.promote(result.version or "")
        return result

    def step(self, index: int, chunk: Chunk) -> ChunkOutcome:
        cols = self.config.columns
        self.set_clock(pd.Timestamp(chunk.frame[cols.timestamp].min()))
        self._deliver_labels(chunk.day)
        review = self.loop.review() if self._alias(CANARY) is not None else None
        if review is not None and review.decision == "promoted" and review.champion:
            self.last_promotion = (index, review.champion)
        champion, canary = self._alias(CHAMPION), self._alias(CANARY)
        served = self._serve(chunk)
        self.set_clock(pd.Timestamp(chunk.frame[cols.timestamp].max()))
        result = self.loop.monitor(self._write_batch(chunk.day, served))
        outcome = ChunkOutcome(index, chunk.day, served, result, champion or "", canary, review=review)

        trigger = self._retrain_trigger(index, result)
        if trigger is not None:
            outcome.trigger = trigger.kind
            outcome.retrain = self.loop.retrain(trigger, self.policy.name)
            if outcome.retrain.status != "skipped":
                self.last_retrain = index
            if outcome.retrain.status == "registered" and outcome.retrain.version:
                outcome.gate = self.loop.promote(outcome.retrain.version)
        if (
            events.PERFORMANCE_DEGRADED in result.events
            and self.last_promotion is not None
            and index - self.last_promotion[0] <= 1
        ):
            version = self.last_promotion[1]
            outcome.rollback = self.loop.rollback(version, "performance degraded within a day of the promotion")
            self.last_promotion = None
        return outcome

    # -- the automations' triggers

    def _retrain_trigger(self, index: int, result: MonitorResult) -> Trigger | None:
        kind = self.policy.kind
        if kind == "never":
            return None
        if kind == "always":
            return Trigger.of("schedule", None, "policy always: every chunk", None)
        if kind == "schedule":
            due = index - self.last_retrain >= (self.policy.every or 1)
            return Trigger.of("schedule", None, f"policy {self.policy.name}", None) if due else None
        if events.RETRAIN_REQUESTED not in result.events:
            return None
        return Trigger.of("event", f"replay-{result.batch_id}", result.policy[:400], result.metric)

    # -- the world around the loop

    def _deliver_labels(self, day: str) -> None:
        folder = self.config.data.path("labels")
        for delivered_on, frame in self.labels:
            if delivered_on <= day and delivered_on not in self.delivered:
                io.write_table(frame, f"{folder}/{delivered_on}.parquet")
                self.delivered.add(delivered_on)

    def _alias(self, alias: str) -> str | None:
        info = self.ports.registry.version_by_alias(alias)
        return info.version if info is not None else None

    def _model(self, version: str) -> Any:
        if version not in self._models:
            self._models[version] = self.ports.registry.load_version(version).model
        return self._models[version]

    def _serve(self, chunk: Chunk) -> pd.DataFrame:
        """The scoring service on this chunk: each row routed by its id (the configured
        share to the canary), scored by the model of its alias, logged."""
        from evergreen.engines.training import output_columns

        cols, cfg = self.config.columns, self.config
        champion, canary = self._alias(CHAMPION), self._alias(CANARY)
        if champion is None:
            raise RuntimeError("nothing to serve with: the registry has no champion")
        frame = chunk.frame
        aliases = np.asarray(
            route_many(frame[cols.id].tolist(), cfg.mlflow.model_name, cfg.canary.traffic_share, canary is not None)
        )
        served = frame.copy()
        served[cols.model_version] = np.where(aliases == CANARY, canary or "", champion)
        for alias, version in ((CHAMPION, champion), (CANARY, canary)):
            rows = aliases == alias
            if version is None or not rows.any():
                continue
            # The prediction and the probability column(s), under the config's names.
            preds = self._model(version).predict(frame.loc[rows])
            for name, values in output_columns(preds, cols).items():
                served.loc[rows, name] = values
        log = served.assign(**{ALIAS_COLUMN: aliases, SERVED_AT_COLUMN: self.now()})
        self.ports.predictions.append(log)
        return served

    def _write_batch(self, day: str, served: pd.DataFrame) -> str:
        path = f"{self.config.data.path('batches')}/{day}.parquet"
        io.write_table(served, path)
        return path


def label_files(config: ModelConfig) -> list[tuple[str, pd.DataFrame]]:
    """The stream's labels files (delivery day, table), in day order."""
    return [(f.day, io.read_table(f.path)) for f in io.list_batches(config.data.path("labels"))]


def with_data_root(config: ModelConfig, root: str) -> ModelConfig:
    return config.model_copy(update={"data": config.data.model_copy(update={"root": root})})


def copy_references(source: ModelConfig, target: ModelConfig) -> None:
    """The stream's reference tables where the replay's loop reads them."""
    for table in ("training_reference", "monitor_reference"):
        if io.exists(source.data.path(table)):
            io.write_table(io.read_table(source.data.path(table)), target.data.path(table))
