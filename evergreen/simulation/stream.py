"""A replayable production stream for the demo, backtests and benchmarks.

From a labelled reference table and a labelled "analysis" table, `write_stream_from_frames`
trains the first serving model and writes the layout the rest of Evergreen reads:

    <out>/reference.parquet          training reference: id, timestamp, features, target
    <out>/monitor_reference.parquet  held-out reference scored by the model (+ labels)
    <out>/model/                     the serving model (model.ubj + evergreen_model.json)
    <out>/batches/<YYYY-MM-DD>.parquet   one scored batch per day, no target
    <out>/labels/<YYYY-MM-DD>.parquet    (id, target) of batch d, delivered on d + delay
    <out>/stream.json                metadata: days, drift kind, start, features, seed

`write_demo_stream` does this for NannyML's synthetic car-loan dataset.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters.io import write_json, write_table
from evergreen.config import ModelConfig
from evergreen.engines.training import TrainedModel, split_by_time, train_model
from evergreen.simulation.inject import DRIFT_ALIASES, DRIFT_KINDS, Injection, inject_drift

MODEL_DIR = "model"
STREAM_FILE = "stream.json"
DEFAULT_MODEL_VERSION = "stream-v0"
DAY_US = 86_400_000_000


class StreamError(ValueError):
    """Input frames or parameters a stream cannot be built from; the message says which."""


@dataclass(frozen=True)
class StreamInfo:
    """Where a written stream lives and what was injected into it."""

    out_dir: str
    days: list[str]
    n_rows: int
    rows_per_batch: int
    label_delay_days: int
    drift: str
    drift_start_index: int | None
    drift_start_date: str | None
    features_shifted: list[str]
    injection: dict[str, Any]
    seed: int
    model_version: str
    model_dir: str
    reference_path: str
    monitor_reference_path: str
    batches_dir: str
    labels_dir: str
    holdout_metric: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (written as stream.json)."""
        return asdict(self)


@dataclass(frozen=True)
class DemoFrames:
    """The car-loan data: reference (labelled) and analysis joined with its targets."""

    reference: pd.DataFrame
    analysis: pd.DataFrame


def write_demo_stream(
    config: ModelConfig,
    out_dir: str,
    drift: str = "none",
    drift_start: int | str | None = None,
    seed: int = 0,
    drift_params: dict[str, Any] | None = None,
) -> StreamInfo:
    """Write the demo stream from NannyML's synthetic car-loan dataset (see module doc).

    Note that the source data drifts by itself about halfway through the analysis period
    (car_value moves up); `drift` injects more on top of that from `drift_start` on.
    """
    frames = load_car_loan_frames(config)
    return write_stream_from_frames(
        config, frames.reference, frames.analysis, out_dir, drift, drift_start, seed, drift_params
    )


def load_car_loan_frames(config: ModelConfig) -> DemoFrames:
    """NannyML's synthetic car-loan data with the analysis targets joined on id."""
    reference, analysis, targets = _read_car_loan_tables()
    cols = config.columns
    for name, frame in (("reference", reference), ("analysis targets", targets)):
        if cols.target not in frame.columns:
            raise StreamError(
                f"car-loan {name} has no target column {cols.target!r} (has {list(frame.columns)}); "
                "columns.target must be 'repaid' for the demo data"
            )
    analysis = analysis.drop(columns=[cols.target], errors="ignore").merge(
        targets[[cols.id, cols.target]], on=cols.id, how="left", validate="one_to_one"
    )
    return DemoFrames(reference=reference, analysis=analysis)


def write_stream_from_frames(
    config: ModelConfig,
    reference: pd.DataFrame,
    analysis: pd.DataFrame,
    out_dir: str,
    drift: str = "none",
    drift_start: int | str | None = None,
    seed: int = 0,
    drift_params: dict[str, Any] | None = None,
    *,
    reference_train_fraction: float = 0.7,
    model_version: str = DEFAULT_MODEL_VERSION,
) -> StreamInfo:
    """Train the first model on `reference` and write `analysis` as a daily stream.

    Both frames need id, timestamp, target and every feature. The first
    `reference_train_fraction` of the reference (by time) trains the model; the rest is
    scored and becomes the monitor reference. The analysis rows, in time order, get
    `drift` injected from day `drift_start` on (a 0-based day index or an ISO date;
    default: the middle day), are cut into batches of `data.rows_per_batch` and re-stamped
    so batch d falls on `data.start_date` + d days.
    """
    began = time.perf_counter()
    drift = DRIFT_ALIASES.get(drift, drift)
    if drift not in DRIFT_KINDS:
        raise StreamError(f"drift {drift!r} is unknown; use one of {DRIFT_KINDS}")
    if not 0 < reference_train_fraction < 1:
        raise StreamError(
            f"reference_train_fraction must be within (0, 1); got {reference_train_fraction}"
        )
    cols, data = config.columns, config.data
    required = [cols.id, cols.timestamp, cols.target, *cols.features]
    _require(reference, required, "reference frame")
    _require(analysis, required, "analysis frame")

    ref = _clean_frame(reference, config)
    split = split_by_time(ref, cols.timestamp, 1 - reference_train_fraction)
    model = train_model(split.train, config)
    monitor_ref = _with_predictions(split.validation, model, config, model_version)

    stream = _clean_frame(analysis, config)
    stream = stream.sort_values(cols.timestamp, kind="mergesort").reset_index(drop=True)
    n_days = -(-len(stream) // data.rows_per_batch)
    if n_days == 0:
        raise StreamError("analysis frame has no rows; nothing to stream")
    start_day = _start_day(drift_start, n_days, data.start_date) if drift != "none" else None
    injection = _inject(stream, config, model, drift, start_day, seed, drift_params or {})
    stream = injection.frame

    paths = _paths(out_dir, config)
    write_table(ref[[cols.id, cols.timestamp, *cols.features, cols.target]], paths["reference"])
    write_table(monitor_ref, paths["monitor_reference"])
    model.save(paths["model"])
    days = _write_batches(stream, model, config, paths, model_version)

    info = StreamInfo(
        out_dir=out_dir,
        days=days,
        n_rows=len(stream),
        rows_per_batch=data.rows_per_batch,
        label_delay_days=data.label_delay_days,
        drift=drift,
        drift_start_index=start_day,
        drift_start_date=_day_name(data.start_date, start_day) if start_day is not None else None,
        features_shifted=list(injection.description.features),
        injection=injection.description.to_dict(),
        seed=seed,
        model_version=model_version,
        model_dir=paths["model"],
        reference_path=paths["reference"],
        monitor_reference_path=paths["monitor_reference"],
        batches_dir=paths["batches"],
        labels_dir=paths["labels"],
        holdout_metric=_holdout_metric(monitor_ref, config),
        seconds=round(time.perf_counter() - began, 3),
    )
    write_json(info.to_dict(), paths["stream"])
    return info


def _read_car_loan_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three car-loan CSVs that ship inside nannyml.

    Read from the package data directory without importing nannyml (which takes ~18 s);
    falls back to nannyml's own loader if the files are not where we expect them. Both
    paths run the same `pandas.read_csv` on the same files.
    """
    import importlib.util

    spec = importlib.util.find_spec("nannyml")
    names = (
        "synthetic_car_loan_reference.csv",
        "synthetic_car_loan_analysis.csv",
        "synthetic_car_loan_analysis_target.csv",
    )
    if spec is not None and spec.submodule_search_locations:
        data_dir = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        if all((data_dir / n).is_file() for n in names):
            ref, ana, tgt = (pd.read_csv(data_dir / n) for n in names)
            return ref, ana, tgt
    from nannyml.datasets import load_synthetic_car_loan_dataset

    return load_synthetic_car_loan_dataset()


def _clean_frame(df: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """Copy without serving columns, timestamps parsed, binary targets as 0/1 integers."""
    cols = config.columns
    serving = [cols.prediction, cols.probability, cols.model_version]
    out = df.drop(columns=[c for c in serving if c and c in df.columns])
    out[cols.timestamp] = pd.to_datetime(out[cols.timestamp])
    target = pd.to_numeric(out[cols.target])
    if config.problem_type == "binary_classification" and target.notna().all():
        target = target.astype("int64")
    out[cols.target] = target
    return out


def _with_predictions(
    df: pd.DataFrame, model: TrainedModel, config: ModelConfig, version: str
) -> pd.DataFrame:
    """The frame's id, timestamp, features and target plus the model's output columns."""
    cols = config.columns
    out = df[[cols.id, cols.timestamp, *cols.features, cols.target]].reset_index(drop=True)
    scored = model.predict(out)
    out[cols.prediction] = scored.prediction
    if cols.probability and scored.probability is not None:
        out[cols.probability] = scored.probability
    out[cols.model_version] = version
    return out


def _start_day(drift_start: int | str | None, n_days: int, start_date: str) -> int:
    if drift_start is None:
        return n_days // 2
    if isinstance(drift_start, str) and not drift_start.lstrip("-").isdigit():
        try:
            day = (date.fromisoformat(drift_start) - date.fromisoformat(start_date)).days
        except ValueError as exc:
            raise StreamError(
                f"drift_start {drift_start!r} is neither a day index nor an ISO date"
            ) from exc
    else:
        day = int(drift_start)
    if not 0 <= day < n_days:
        last = _day_name(start_date, n_days - 1)
        raise StreamError(
            f"drift_start {drift_start!r} is outside the stream: use a day index 0..{n_days - 1} "
            f"or a date {start_date}..{last}"
        )
    return day


def _inject(
    stream: pd.DataFrame,
    config: ModelConfig,
    model: TrainedModel,
    drift: str,
    start_day: int | None,
    seed: int,
    params: dict[str, Any],
) -> Injection:
    start_row = 0 if start_day is None else start_day * config.data.rows_per_batch
    params = dict(params)
    features = params.pop("features", None)
    if drift in ("covariate", "gradual_covariate", "unit") and features is None:
        # The most important features: shifting them moves the model's metric too (a unit
        # change hits the most important continuous one).
        importance = model.feature_importance()
        ranked = sorted(importance, key=lambda f: (-importance[f], f))
        features = [f for f in ranked if f in config.columns.continuous][:1] if drift == "unit" else ranked[:2]
    if "ramp_days" in params:  # gradual drift: the ramp in days of the stream
        params["ramp_rows"] = int(params.pop("ramp_days")) * config.data.rows_per_batch
    return inject_drift(
        stream,
        config.columns,
        config.problem_type,
        drift,  # type: ignore[arg-type]
        start_row,
        features=features,
        seed=seed,
        **params,
    )


def _write_batches(
    stream: pd.DataFrame,
    model: TrainedModel,
    config: ModelConfig,
    paths: dict[str, str],
    version: str,
) -> list[str]:
    cols, data = config.columns, config.data
    scored = model.predict(stream)
    keep = [cols.id, cols.timestamp, *cols.features]
    days: list[str] = []
    written: dict[str, set[str]] = {"batches": set(), "labels": set()}
    for d, begin in enumerate(range(0, len(stream), data.rows_per_batch)):
        rows = slice(begin, begin + data.rows_per_batch)
        day = _day_name(data.start_date, d)
        batch = stream.iloc[rows][keep].reset_index(drop=True)
        batch[cols.timestamp] = _spread_over_day(day, len(batch))
        batch[cols.prediction] = scored.prediction[rows]
        if cols.probability and scored.probability is not None:
            batch[cols.probability] = scored.probability[rows]
        batch[cols.model_version] = version
        labels = stream.iloc[rows][[cols.id, cols.target]].reset_index(drop=True)
        delivered = _day_name(data.start_date, d + data.label_delay_days)
        write_table(_parquet_safe(batch), f"{paths['batches']}/{day}.parquet")
        write_table(labels, f"{paths['labels']}/{delivered}.parquet")
        written["batches"].add(f"{day}.parquet")
        written["labels"].add(f"{delivered}.parquet")
        days.append(day)
    for key, names in written.items():
        _remove_stale(paths[key], names)
    return days


def _spread_over_day(day: str, n: int) -> pd.Series:
    """n increasing timestamps spread evenly over the calendar day (microsecond steps)."""
    offsets = np.arange(n, dtype=np.int64) * (DAY_US // max(n, 1))
    return pd.Series(pd.Timestamp(day) + pd.to_timedelta(offsets, unit="us")).astype(
        "datetime64[us]"
    )


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing numbers and text (injected bad data) become text columns."""
    out = df.copy()
    for name in out.columns:
        if out[name].dtype == object:
            kinds = {type(v) for v in out[name].dropna()}
            if len(kinds) > 1 and str in kinds:
                out[name] = out[name].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
            else:
                out[name] = out[name].infer_objects()
    return out


def _remove_stale(directory: str, keep: set[str]) -> None:
    """Drop .parquet files of an earlier, longer stream so readers see only this one."""
    import fsspec

    fs, _, (root,) = fsspec.get_fs_token_paths(directory)
    if not fs.exists(root):
        return
    for path in fs.ls(root, detail=False):
        name = PurePosixPath(str(path)).name
        if name.endswith(".parquet") and name not in keep:
            fs.rm(path)


def _paths(out_dir: str, config: ModelConfig) -> dict[str, str]:
    data = config.data
    base = out_dir.rstrip("/")

    def under(value: str) -> str:
        return value if "://" in value or Path(value).is_absolute() else f"{base}/{value}"

    return {
        "reference": under(data.training_reference),
        "monitor_reference": under(data.monitor_reference),
        "batches": under(data.batches),
        "labels": under(data.labels),
        "model": f"{base}/{MODEL_DIR}",
        "stream": f"{base}/{STREAM_FILE}",
    }


def _day_name(start_date: str, index: int) -> str:
    return (date.fromisoformat(start_date) + timedelta(days=index)).isoformat()


def _holdout_metric(monitor_ref: pd.DataFrame, config: ModelConfig) -> dict[str, float]:
    """The configured metric of the serving model on the held-out reference."""
    from sklearn import metrics

    cols = config.columns
    y = monitor_ref[cols.target].to_numpy(dtype=float)
    pred = monitor_ref[cols.prediction].to_numpy(dtype=float)
    scorers = {
        "roc_auc": lambda: metrics.roc_auc_score(y, monitor_ref[cols.probability]),
        "f1": lambda: metrics.f1_score(y, pred),
        "accuracy": lambda: metrics.accuracy_score(y, pred),
        "precision": lambda: metrics.precision_score(y, pred, zero_division=0),
        "recall": lambda: metrics.recall_score(y, pred),
        "mae": lambda: metrics.mean_absolute_error(y, pred),
        "mse": lambda: metrics.mean_squared_error(y, pred),
        "rmse": lambda: metrics.root_mean_squared_error(y, pred),
        "mape": lambda: metrics.mean_absolute_percentage_error(y, pred),
    }
    return {config.metric: round(float(scorers[config.metric]()), 6)}


def _require(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise StreamError(f"{what} lacks columns {missing}; it has {list(df.columns)}")
