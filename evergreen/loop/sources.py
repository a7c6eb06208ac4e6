"""Reading what a retrain can learn from: the training reference and the labelled batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters import io, ledger, registry, tracking
from evergreen.adapters.ports import BatchStore, ModelRegistry
from evergreen.config import ModelConfig, check_columns
from evergreen.decisions.defaults import gate_min_rows, gate_shortfall
from evergreen.decisions.window import LabelledBatch, TrainingWindow, assemble_window, join_labels
from evergreen.engines.validation import (
    ExpectationFailure,
    ValidationReport,
    ValidationStatistics,
    unreadable_report,
    validate_labels,
)
from evergreen.times import utc, utc_series

MONITOR_ROLES = ("id", "timestamp", "target", "prediction", "probability", "features")
TRAINING_ROLES = ("id", "target", "features")


def check_config_columns(config: ModelConfig) -> None:
    """The columns the config names exist in the reference tables that are there (only
    their schema is read); ConfigError names each wrong field. Run before any other work."""
    for name, roles in (("monitor_reference", MONITOR_ROLES), ("training_reference", TRAINING_ROLES)):
        path = config.data.path(name)
        if io.exists(path):
            check_columns(config.columns, io.table_columns(path), path, roles)


def read_training_reference(config: ModelConfig) -> pd.DataFrame | None:
    """The training reference table, or None when the policy leaves it out or it is absent."""
    path = config.data.path("training_reference")
    if not config.retrain.include_reference or not io.exists(path):
        return None
    return io.read_table(path)


def read_monitor_reference(config: ModelConfig, models: ModelRegistry | None = None) -> pd.DataFrame:
    """The NannyML reference: the serving model's predictions on held-out labelled data —
    the current champion's (logged by its retrain run) when the registry has one, else the
    data folder's file. `models` is the registry port (default: the configured MLflow)."""
    if models is None:
        tracking.connect(config.mlflow)
        models = registry.Registry(config.mlflow.model_name)
    champion = models.champion_reference()
    if champion is not None:
        version, frame = champion
        return frame.assign(**{config.columns.model_version: version})
    path = config.data.path("monitor_reference")
    if not io.exists(path):
        raise MissingInputError(
            f"{config.name} has no champion yet, so there is no monitor reference (the champion's "
            f"predictions on held-out labelled rows; {path} does not exist either): create the "
            "first champion with `evergreen bootstrap --config FILE` (trained on your reference, "
            "or --model to take in your own)"
        )
    return io.read_table(path)


class MissingInputError(FileNotFoundError):
    """An input the loop needs does not exist yet; the message names the command that makes it."""


def output_columns(config: ModelConfig) -> list[str]:
    """The serving model's output columns a batch carries: prediction and probability (one
    per class for multiclass)."""
    return [config.columns.prediction, *config.probability_columns]


def lacks_predictions(frame: pd.DataFrame, config: ModelConfig) -> bool:
    """Whether a batch lacks the serving model's outputs (and has the features to score it)."""
    missing = [c for c in output_columns(config) if c not in frame.columns]
    return bool(missing) and all(c in frame.columns for c in config.columns.features)


def load_champion(models: ModelRegistry, config: ModelConfig) -> Any:
    """The champion (a `registry.LoadedModel`) to score batches without predictions; kept
    for the process per version (a monitor run scores many batches with it)."""
    info = models.version_by_alias(registry.CHAMPION)
    if info is None:
        raise MissingInputError(
            f"a batch of {config.name} has no predictions ({output_columns(config)}) and there is "
            "no champion to score it: create one with `evergreen bootstrap --config FILE`"
        )
    key = (info.name, info.version, info.source, info.run_id)
    if key not in _CHAMPIONS:
        _CHAMPIONS.clear()  # one model at a time is plenty: versions change rarely
        _CHAMPIONS[key] = models.load_version(info.version)
    return _CHAMPIONS[key]


_CHAMPIONS: dict[tuple, Any] = {}


def score_batch(champion: Any, frame: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """`frame` with the champion's outputs in the output columns it lacks, and its version."""
    from evergreen.engines.training import output_columns as named_outputs

    cols = config.columns
    out = frame.copy()
    for column, values in named_outputs(champion.model.predict(frame), cols).items():
        if column not in out.columns:
            out[column] = values
    if cols.model_version not in out.columns:
        out[cols.model_version] = champion.version.version
    return out


class BatchRows:
    """A production batch's rows for the monitor, in pieces of at most `data.memory_rows`:
    a batch that small is read whole once (when opened) and kept; a larger one is read a
    piece at a time each time it is iterated, so the monitor's memory is that of a piece
    whatever the batch's size. Rows without the serving model's outputs are scored by the
    champion given to `scored` (a piece at a time)."""

    def __init__(self, store: BatchStore, batch: io.BatchFile, config: ModelConfig, rows: int | None = None) -> None:
        self.store, self.batch, self.config = store, batch, config
        self.piece_rows = rows or config.data.memory_rows
        self._champion: Any = None
        self._served: str | None = None
        self._whole: pd.DataFrame | None = None
        total = store.batch_rows(batch)
        if total is None or total <= self.piece_rows:
            self._whole = store.read_batch(batch, datetime_columns=[config.columns.timestamp])

    @classmethod
    def open(cls, store: BatchStore, batch: io.BatchFile, config: ModelConfig) -> BatchRows:
        """The batch's rows (read now when it fits in one piece)."""
        return cls(store, batch, config)

    @property
    def whole(self) -> bool:
        return self._whole is not None

    def lacks_predictions(self) -> bool:
        """Whether the batch lacks the serving model's outputs (and has the features)."""
        columns = list(self._whole.columns) if self._whole is not None else io.table_columns(self.batch.path)
        return lacks_predictions(pd.DataFrame(columns=columns), self.config)

    def scored(self, champion: Any) -> BatchRows:
        """These rows with the champion's outputs where the batch lacks them."""
        self._champion = champion
        if self._whole is not None:
            self._whole = score_batch(champion, self._whole, self.config)
        return self

    def served_by(self, version: str | None) -> BatchRows:
        """These rows narrowed to those `version` served (by the model-version column), when it
        served any; a batch it served none of (served outside the loop) keeps every row."""
        column = self.config.columns.model_version
        if version is None:
            return self
        if self._whole is not None:
            if column in self._whole.columns:
                served = self._whole[self._whole[column].astype(str) == version]
                if len(served):
                    self._whole = served.reset_index(drop=True)
            return self
        if column in io.table_columns(self.batch.path):
            versions = self.store.read_batch(self.batch, columns=[column])[column].astype(str)
            if (versions == version).any():
                self._served = version
        return self

    def __iter__(self) -> Iterator[pd.DataFrame]:
        if self._whole is not None:
            yield self._whole
            return
        ts, column = self.config.columns.timestamp, self.config.columns.model_version
        for piece in self.store.iter_batch(self.batch, self.piece_rows, datetime_columns=[ts]):
            if self._served is not None:
                piece = piece[piece[column].astype(str) == self._served].reset_index(drop=True)
                if not len(piece):
                    continue
            yield piece if self._champion is None else score_batch(self._champion, piece, self.config)


def assemble_training_window(config: ModelConfig) -> TrainingWindow:
    """The retrain's training window: the training reference and the labelled production
    batches, by the retrain policy (`window.assemble_window`). The frames read for it are
    freed by the time it returns, and their memory is handed back to the system (large
    buffers are mapped on their own from here on: `io.map_large_buffers`)."""
    io.map_large_buffers()
    win = assemble_window(read_training_reference(config), read_labelled_batches(config), config.retrain, config.columns)
    io.release_unused_memory()
    return win


def read_labelled_batches(config: ModelConfig, up_to_day: str | None = None) -> list[LabelledBatch]:
    """Every production batch with the labels delivered so far joined on id.

    Batches the monitor rejected come back with valid=False and the reason, so the window
    can exclude (and report) them without reading their (bad) data.
    """
    labels = io.read_labels(config.data.path("labels"), up_to_day=up_to_day)
    rejected = ledger.read_ledger(config.data.path("state")).rejected()
    out: list[LabelledBatch] = []
    for b in io.list_batches(config.data.path("batches")):
        if up_to_day is not None and b.day > up_to_day:
            continue
        if b.day in rejected:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=rejected[b.day]))
            continue
        if labels is None:
            continue
        try:
            frame = io.read_table(b.path)
        except io.DataReadError as exc:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=str(exc)))
            continue
        out.append(LabelledBatch(b.day, join_labels(frame, labels, config.columns)))
    return out


def read_fresh_labelled(config: ModelConfig, after: pd.Timestamp | None = None) -> pd.DataFrame:
    """The gate's evidence from the labelled batches on file (`select_fresh_rows`)."""
    return select_fresh_rows(read_labelled_batches(config), config, after)


def select_fresh_rows(
    batches: list[LabelledBatch],
    config: ModelConfig,
    after: pd.Timestamp | None = None,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The freshest labelled production rows for the gate: rows newer than `after` (the end of
    the challenger's training data) and stamped at or after `since` (an episode's change
    point, for cross-fit models: `promote.evidence_span`), topped up with the most recent
    rows when fewer than the gate's minimum (`defaults.gate_min_rows`) are that fresh; at
    most `gate.evaluation_rows`, oldest first. Batches the monitor rejected are left out.
    The promote flow and the backtest both gate on this."""
    frames = [b.frame for b in batches if b.valid and len(b.frame)]
    if not frames:
        return pd.DataFrame()
    ts = config.columns.timestamp
    frame = pd.concat(frames, ignore_index=True)
    frame[ts] = utc_series(frame[ts])
    frame = frame.sort_values(ts, kind="mergesort").reset_index(drop=True)
    if after is not None or since is not None:
        fresh = frame
        if after is not None:
            fresh = fresh[fresh[ts] > utc(after)]
        if since is not None:
            fresh = fresh[fresh[ts] >= utc(since)]
        if len(fresh) >= gate_min_rows(config):
            frame = fresh
    return frame.tail(config.gate.evaluation_rows).reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class LatestRealized:
    """The realized metric of the newest labelled batch, that batch's day and its first
    timestamp."""

    day: str
    metric: Any  # engines.monitoring.MetricEstimate
    start: Any = None


def realized_on_latest_labelled(
    config: ModelConfig,
    store: BatchStore,
    day: str,
    labels: pd.DataFrame | None,
    realize: Callable[[io.BatchFile], Any],
    serving_version: str | None = None,
    known_versions: set[str] | None = None,
) -> LatestRealized | None:
    """Labels arrive late: the realized metric of the most recent batch up to `day` whose
    labels have arrived (`realize(batch)`: the batch's monitor report, whose `realized_metric`
    is a MetricEstimate or None, and `start` its first timestamp); None when none is.

    Batches the monitor rejected are skipped (their labels may arrive, but their data failed
    validation). With `serving_version`, a batch that carries the model-version column and
    none of whose rows that version served ends the search: a replaced model's realized
    metric says nothing of the one serving now."""
    if labels is None or not len(labels):
        return None
    cols = config.columns
    known = pd.Index(labels[cols.id].dropna().unique())
    rejected = store.read_ledger().rejected()
    for batch in reversed([b for b in store.list_batches() if b.day <= day]):
        if batch.day in rejected:
            continue
        try:
            frame = store.read_batch(batch, columns=[cols.id])
        except io.DataReadError:
            continue
        if not frame[cols.id].isin(known).any():
            continue
        if serving_version is not None and not _served_by(store, batch, cols.model_version, serving_version, known_versions):
            return None
        try:
            report = realize(batch)
        except io.DataReadError:
            continue
        if report.realized_metric is not None:
            return LatestRealized(batch.day, report.realized_metric, report.start)
    return None


def _served_by(
    store: BatchStore, batch: io.BatchFile, column: str, version: str, known: set[str] | None = None
) -> bool:
    """Whether `version` served rows of the batch. A batch that does not say who served it,
    or names only versions the registry does not know (`known`: a model served outside the
    loop, before it took over), cannot be told apart: it counts."""
    try:
        served = store.read_batch(batch, columns=[column])[column].astype(str)
    except (io.DataReadError, KeyError, ValueError):
        return True
    if known is not None and not served.isin(known).any():
        return True
    return bool((served == str(version)).any())


def gate_evidence_shortfall(rows: int, config: ModelConfig) -> str | None:
    """Why the gate cannot judge on `rows` fresh labelled rows, and what to change or how
    long to wait (`defaults.gate_shortfall`; None: it can)."""
    return gate_shortfall(rows, config)


def check_label_files(config: ModelConfig, up_to_day: str | None = None) -> list[ValidationReport]:
    """Each labels file delivered so far, checked on its own (`validation.validate_labels`):
    readable, id and target present, ids unique, targets possible for the problem type, at
    most `data.max_unknown_label_fraction` of its ids unknown to every batch file (the
    batches the monitor rejected count as served), and no id labelled by an earlier file.

    The served ids are looked up in one index built once, and the ids labelled twice found
    in one pass over every file's ids: the cost grows with the rows, not with files x rows
    (a year of daily files made the check quadratic)."""
    id_col = config.columns.id
    served: list[pd.Series] = []
    unreadable: list[str] = []
    for b in io.list_batches(config.data.path("batches")):
        try:
            served.append(io.read_table(b.path, columns=[id_col])[id_col])
        except (io.DataReadError, KeyError, ValueError):
            unreadable.append(b.day)
    known = pd.Index(pd.concat(served, ignore_index=True) if served else pd.Series([], dtype="int64")).unique()
    del served
    reports: list[ValidationReport] = []
    delivered: list[tuple[int, pd.Series]] = []  # (position in reports, the file's ids)
    for f in io.list_batches(config.data.path("labels")):
        if up_to_day is not None and f.day > up_to_day:
            continue
        try:
            labels = io.read_table(f.path)
        except io.DataReadError as exc:
            reports.append(unreadable_report(f.path, exc))
            continue
        report = validate_labels(
            labels, known, config, batch_id=f.path,
            max_unknown_fraction=config.data.max_unknown_label_fraction,
        )
        reports.append(_with_unreadable_hint(report, unreadable, id_col))
        if id_col in labels.columns:
            delivered.append((len(reports) - 1, labels[id_col].reset_index(drop=True)))
    for (k, ids), again in zip(delivered, labelled_before(ids for _, ids in delivered), strict=True):
        reports[k] = _check_relabelled(reports[k], ids[again], id_col)
    return reports


def labelled_before(files: Iterable[pd.Series]) -> list[np.ndarray]:
    """For each file's ids, in delivery order: which of them an earlier file already holds
    (a boolean mask per file; a repeat within one file is not counted here, and a missing id
    never is). One factorization of every id, whatever the number of files."""
    parts = list(files)
    if len(parts) < 2:
        return [np.zeros(len(p), dtype=bool) for p in parts]
    sizes = [len(p) for p in parts]
    codes, _ = pd.factorize(pd.concat(parts, ignore_index=True))
    file_of = np.repeat(np.arange(len(parts), dtype=np.int32), sizes)
    present = codes >= 0
    first = np.full(int(codes.max()) + 1 if present.any() else 0, len(parts), dtype=np.int32)
    np.minimum.at(first, codes[present], file_of[present])
    again = np.zeros(len(codes), dtype=bool)
    again[present] = first[codes[present]] < file_of[present]
    return np.split(again, np.cumsum(sizes)[:-1])


def _check_relabelled(report: ValidationReport, again: pd.Series, id_col: str) -> ValidationReport:
    """Ids that an earlier labels file already labelled (`again`, in the file's order): which
    label holds is undecidable."""
    stats = ValidationStatistics(
        evaluated=report.statistics.evaluated + 1,
        successful=report.statistics.successful + int(again.empty),
    )
    if again.empty:
        return dataclasses.replace(report, statistics=stats)
    sample = [v.item() if hasattr(v, "item") else v for v in again.unique()[:5]]
    failure = ExpectationFailure(
        "expect_column_values_to_be_unique",
        id_col,
        {"unexpected_count": len(again), "sample": sample},
        "ids not labelled by an earlier labels file",
        f"{len(again)} labels repeat ids an earlier labels file already labelled (e.g. {sample}); "
        "deliver each label once (replace the earlier file instead)",
    )
    return dataclasses.replace(
        report, success=False, failures=[*report.failures, failure], statistics=stats
    )


def _with_unreadable_hint(report: ValidationReport, unreadable: list[str], id_col: str) -> ValidationReport:
    """Labels of a batch whose file cannot be read look unknown: say so where it matters."""
    if report.success or not unreadable:
        return report
    failures = [
        dataclasses.replace(
            f, message=f"{f.message}; batches {unreadable} cannot be read, their ids are unknown"
        )
        if f.expectation_type == "expect_column_values_to_be_in_set" and f.column == id_col
        else f
        for f in report.failures
    ]
    return dataclasses.replace(report, failures=failures)
