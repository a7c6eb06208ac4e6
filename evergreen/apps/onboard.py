"""`evergreen init`: a config for a user's own model, inferred from their data.

From a labelled reference table (Parquet or CSV, any fsspec path), the name of its target and,
optionally, the production batch folder and the labels folder, `infer_config` guesses every
column role (id, timestamp, features and which are categorical, the serving model's
prediction and probability columns), the problem type, the batch cadence and size and the
label delay, and `render_config` writes them as a commented YAML config that `evergreen`
accepts as is. Every guess carries the reason and how to change it; `init` prints them.

Reads data, decides nothing about the loop: the loop's defaults for a cadence and batch size
come from `evergreen.decisions.defaults`.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from evergreen.adapters import io
from evergreen.config import ConfigError, parse_config

# A column whose name says it is an identifier (whole word: `id`, `PassengerId`, `loan_id`).
_ID_NAME = re.compile(r"(^|_|[a-z])(id|ID|Id|key|uuid)$")
_TIME_NAME = re.compile(r"(time|date|timestamp|_at$|^ts$|datetime)", re.IGNORECASE)
_PREDICTION_NAMES = ("y_pred", "prediction", "predicted", "pred", "y_hat", "score_label")
_PROBABILITY_PREFIXES = ("y_pred_proba", "predicted_probability", "probability", "proba", "y_score", "score")
_VERSION_NAMES = ("model_version", "version")
# A text column with more distinct values than this share of its rows is an identifier or
# free text (a name, a ticket number), not a category a model can learn from.
TEXT_UNIQUE_SHARE = 0.5
MAX_CATEGORIES = 200
# A target with at most this many classes (and more than two) is multiclass when it is not a float.
MAX_CLASSES = 50
SAMPLE_ROWS = 200_000
# One feature that predicts the target this well on its own is suspect of leaking it.
LEAK_SCORE = 0.95


class InitError(ValueError):
    """Data `init` cannot build a config from; the message says what to pass or fix."""


@dataclass(frozen=True)
class Guess:
    """One inferred setting: the config field, its value, why, and how to change it."""

    field: str
    value: Any
    why: str
    change: str = ""


@dataclass(frozen=True)
class StreamShape:
    """What the batch (and labels) folders show: cadence, size, label delay."""

    batches: int
    cadence: timedelta | None
    rows_per_batch: int
    min_rows: int
    max_rows: int
    label_delay: timedelta | None
    first_day: str | None
    serving_columns: list[str] = field(default_factory=list)


@dataclass
class Inference:
    """A config mapping plus the guesses and notes that explain it."""

    config: dict[str, Any]
    guesses: list[Guess]
    notes: list[str]
    shape: StreamShape | None = None

    def guess(self, name: str) -> Guess:
        for g in self.guesses:
            if g.field == name:
                return g
        raise KeyError(name)


# ----------------------------------------------------------------------------- reading


def read_sample(path: str, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first `rows` rows of a table (the whole table when smaller)."""
    frame = io.read_table(path)
    return frame.head(rows) if len(frame) > rows else frame


# ----------------------------------------------------------------------------- roles


def infer_problem_type(target: pd.Series) -> tuple[str, str]:
    """binary_classification, multiclass_classification or regression, and why."""
    values = target.dropna()
    if values.empty:
        raise InitError(f"target column {target.name!r} has no values; the reference must be labelled")
    distinct = values.nunique()
    if pd.api.types.is_bool_dtype(values) or distinct == 2:
        return "binary_classification", f"{distinct} distinct values: {_show(sorted(values.unique(), key=str))}"
    integral = pd.api.types.is_integer_dtype(values) or (
        pd.api.types.is_float_dtype(values) and bool((values == values.round()).all())
    )
    if not pd.api.types.is_numeric_dtype(values):
        if distinct > MAX_CLASSES:
            raise InitError(
                f"target column {target.name!r} holds text with {distinct} distinct values: more "
                f"classes than Evergreen models ({MAX_CLASSES}); pass --problem-type if it is right"
            )
        return "multiclass_classification", f"text with {distinct} classes"
    if integral and distinct <= min(MAX_CLASSES, max(3, len(values) // 20)) and distinct > 2:
        return "multiclass_classification", f"{distinct} whole-number classes"
    return "regression", f"numbers with {distinct} distinct values"


def infer_id(frame: pd.DataFrame, exclude: set[str]) -> tuple[str, str]:
    """The id column: named like one and unique, else the first unique integer/text column."""
    candidates = [c for c in frame.columns if c not in exclude]
    unique = [c for c in candidates if frame[c].notna().all() and frame[c].is_unique]
    named = [c for c in unique if _ID_NAME.search(str(c)) or str(c).lower() == "id"]
    if named:
        return str(named[0]), "named like an id, unique and never empty"
    keyed = [
        c for c in unique
        if pd.api.types.is_integer_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])
    ]
    if keyed:
        return str(keyed[0]), "the first column whose values are unique and never empty"
    raise InitError(
        "no id column found: Evergreen joins delayed labels to batches on an id unique per row; "
        "add one to the reference, the batches and the label files, or name it with --id COLUMN"
    )


def infer_timestamp(frame: pd.DataFrame, exclude: set[str]) -> tuple[str, str]:
    """The timestamp column: a datetime column, else text that parses as dates."""
    candidates = [c for c in frame.columns if c not in exclude]
    typed = [c for c in candidates if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if typed:
        return str(typed[0]), "a datetime column"
    for c in sorted(candidates, key=lambda c: not _TIME_NAME.search(str(c))):
        series = frame[c]
        if not (pd.api.types.is_string_dtype(series) or series.dtype == object):
            continue
        sample = series.dropna().head(200)
        if sample.empty:
            continue
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
        if parsed.notna().mean() >= 0.99:
            return str(c), "text that parses as dates"
    raise InitError(
        "no timestamp column found: Evergreen orders rows and batches by time (windows, "
        "hold-outs, freshness); add the time each row was scored to the reference and the "
        "batches, or name the column with --timestamp COLUMN"
    )


def find_serving_columns(
    frame: pd.DataFrame, problem_type: str, classes: list[Any], exclude: set[str]
) -> dict[str, Any]:
    """The serving model's columns present in `frame`: prediction, probability (a column, or
    one per class for multiclass) and model version. Missing ones are left out."""
    cols = [str(c) for c in frame.columns if c not in exclude]
    lower = {c.lower(): c for c in cols}
    found: dict[str, Any] = {}
    for name in _PREDICTION_NAMES:
        if name in lower:
            found["prediction"] = lower[name]
            break
    if problem_type == "binary_classification":
        for c in cols:
            if c == found.get("prediction"):
                continue
            if c.lower().startswith(_PROBABILITY_PREFIXES) and _is_probability(frame[c]):
                found["probability"] = c
                break
    elif problem_type == "multiclass_classification":
        per_class: dict[str, str] = {}
        for k in classes:
            matches = [c for c in cols if c.lower().startswith(_PROBABILITY_PREFIXES) and c.endswith(f"_{k}")]
            if len(matches) == 1 and _is_probability(frame[matches[0]]):
                per_class[str(k)] = matches[0]
        if len(per_class) == len(classes):
            found["probability"] = per_class
    for name in _VERSION_NAMES:
        if name in lower:
            found["model_version"] = lower[name]
            break
    return found


def infer_features(
    frame: pd.DataFrame, reserved: set[str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """Feature columns, the categorical ones among them, and every column left out with why.

    Numbers and booleans are features (booleans categorical); text is categorical unless it
    looks like an identifier or free text (more distinct values than half its rows, or more
    than MAX_CATEGORIES); constant and empty columns carry nothing."""
    features: list[str] = []
    categorical: list[str] = []
    left_out: dict[str, str] = {}
    n = len(frame)
    for c in frame.columns:
        name = str(c)
        if name in reserved:
            continue
        series = frame[c]
        present = series.dropna()
        if present.empty:
            left_out[name] = "always empty"
            continue
        distinct = present.nunique()
        if distinct <= 1:
            left_out[name] = "constant"
            continue
        if pd.api.types.is_datetime64_any_dtype(series):
            left_out[name] = "a datetime (a second time column?)"
            continue
        if pd.api.types.is_bool_dtype(series):
            features.append(name)
            categorical.append(name)
            continue
        if pd.api.types.is_numeric_dtype(series):
            features.append(name)
            continue
        if distinct > MAX_CATEGORIES or distinct > TEXT_UNIQUE_SHARE * len(present):
            left_out[name] = f"text with {distinct:,} distinct values in {n:,} rows (an identifier or free text)"
            continue
        features.append(name)
        categorical.append(name)
    if not features:
        raise InitError(
            f"no feature columns left in the reference (left out: {left_out}); name them with --features"
        )
    return features, categorical, left_out


def leaking_features(frame: pd.DataFrame, target: str, features: list[str], problem_type: str) -> dict[str, float]:
    """Features that alone predict the target almost perfectly on the reference (a column
    filled in after the outcome, like a lifeboat number for survival): feature -> score
    (one-feature ROC AUC for binary targets, |correlation| for regression)."""
    y = frame[target]
    out: dict[str, float] = {}
    if problem_type == "binary_classification":
        positive = sorted(y.dropna().unique().tolist(), key=str)[-1]
        truth = (y == positive).astype(float)
        for f in features:
            x = frame[f]
            # Mean target per value (missing is a value of its own): the best one feature can do.
            key = x.astype("string").fillna("<missing>")
            score = truth.groupby(key).transform("mean")
            auc = _auc(truth[y.notna()].to_numpy(), score[y.notna()].to_numpy())
            if auc is not None and len(key.unique()) < 0.5 * len(frame) and auc >= LEAK_SCORE:
                out[f] = round(auc, 3)
    elif problem_type == "regression":
        for f in features:
            if pd.api.types.is_numeric_dtype(frame[f]) and not pd.api.types.is_bool_dtype(frame[f]):
                corr = frame[f].corr(pd.to_numeric(y, errors="coerce"))
                if corr is not None and not math.isnan(corr) and abs(corr) >= LEAK_SCORE:
                    out[f] = round(abs(float(corr)), 3)
    return out


def _auc(truth: Any, score: Any) -> float | None:
    pos, neg = int(truth.sum()), int(len(truth) - truth.sum())
    if not pos or not neg:
        return None
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[truth == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _is_probability(series: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    values = series.dropna()
    return bool(len(values)) and float(values.min()) >= 0.0 and float(values.max()) <= 1.0


def _show(values: list[Any], most: int = 6) -> str:
    shown = ", ".join(repr(_plain(v)) for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# ----------------------------------------------------------------------------- the stream


def measure_stream(batches: str, labels: str | None, id_column: str, timestamp: str) -> StreamShape:
    """Cadence and rows per batch from the batch files, label delay from the label files.

    Batch files are taken in name order, which must be time order (name them by date:
    `2024-01-31.parquet`); a label file's delay is its date (by name, else its newest
    batch's end) minus the end of the newest batch its ids belong to."""
    files = io.list_batches(batches)
    if not files:
        raise InitError(f"no batch files (*.parquet, *.csv) under {batches}")
    ends: list[pd.Timestamp] = []
    starts: list[pd.Timestamp] = []
    sizes: list[int] = []
    owner: dict[Any, int] = {}
    serving: list[str] = []
    for i, f in enumerate(files):
        frame = io.read_table(f.path, datetime_columns=[timestamp])
        missing = [c for c in (id_column, timestamp) if c not in frame.columns]
        if missing:
            raise InitError(f"batch {f.path} lacks column(s) {missing}; every batch needs the id and timestamp columns")
        stamps = pd.to_datetime(frame[timestamp], utc=True, format="mixed")
        if stamps.notna().any():
            ends.append(stamps.max())
            starts.append(stamps.min())
        sizes.append(len(frame))
        if i == 0:
            serving = [str(c) for c in frame.columns]
        if labels:
            owner.update(dict.fromkeys(frame[id_column].tolist(), i))
    disorder = [files[i + 1].day for i in range(len(ends) - 1) if ends[i + 1] < ends[i] - pd.Timedelta(0)]
    if len(ends) == len(files) and disorder:
        raise InitError(
            f"batch files under {batches} are not named in time order (e.g. {disorder[0]!r} holds "
            "older rows than the file before it): name each batch by its date, e.g. 2024-01-31.parquet"
        )
    steps = [(b - a) for a, b in zip(ends, ends[1:], strict=False) if b > a]
    cadence = statistics.median(steps) if steps else None
    delay = _label_delay(labels, id_column, owner, starts, files) if labels else None
    return StreamShape(
        batches=len(files),
        cadence=cadence,
        rows_per_batch=int(statistics.median(sizes)),
        min_rows=min(sizes),
        max_rows=max(sizes),
        label_delay=delay,
        first_day=files[0].day,
        serving_columns=serving,
    )


def _label_delay(
    labels: str, id_column: str, owner: dict[Any, int], starts: list[pd.Timestamp], files: list[io.BatchFile]
) -> timedelta | None:
    """Median of (a label file's date - the date of the newest batch its ids belong to), by
    the files' names when both are dated, else by the batch's first timestamp."""
    label_files = io.list_batches(labels)
    if not label_files:
        return None
    delays: list[timedelta] = []
    for lf in label_files:
        frame = io.read_table(lf.path)
        if id_column not in frame.columns:
            raise InitError(f"label file {lf.path} has no id column {id_column!r}; label files hold (id, target)")
        batch_ix = [owner[i] for i in frame[id_column].tolist() if i in owner]
        if not batch_ix or len(starts) != len(files):
            continue
        newest = max(batch_ix)
        delivered = _day_stamp(lf.day)
        if delivered is None:
            continue
        batch_day = _day_stamp(files[newest].day) or starts[newest].floor("D")
        delays.append(max(delivered - batch_day, pd.Timedelta(0)).to_pytimedelta())
    return statistics.median(delays) if delays else None


def _day_stamp(name: str) -> pd.Timestamp | None:
    """The date a file is named by (`2024-01-31`, `2024-01-31T06`, `20240131`...), or None."""
    match = re.search(r"(\d{4})-?(\d{2})-?(\d{2})", name)
    if not match:
        return None
    try:
        return pd.Timestamp(f"{match.group(1)}-{match.group(2)}-{match.group(3)}", tz="UTC")
    except ValueError:
        return None


# ----------------------------------------------------------------------------- the config


def infer_config(
    reference: str,
    target: str,
    *,
    batches: str | None = None,
    labels: str | None = None,
    name: str | None = None,
    id_column: str | None = None,
    timestamp: str | None = None,
    problem_type: str | None = None,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    tracking_uri: str | None = None,
    root: str | None = None,
) -> Inference:
    """Every setting `init` can infer from the data, with its reason."""
    frame = read_sample(reference)
    if target not in frame.columns:
        raise InitError(
            f"target {target!r} is not a column of {reference}; its columns are {[str(c) for c in frame.columns]}"
        )
    guesses: list[Guess] = []
    notes: list[str] = []
    model_name = name or _model_name(reference)
    guesses.append(Guess("name", model_name, "from the reference's file name" if not name else "given", "--name NAME"))

    if problem_type:
        ptype, why = problem_type, "given"
    else:
        ptype, why = infer_problem_type(frame[target])
    guesses.append(Guess("problem_type", ptype, why, "--problem-type binary_classification|multiclass_classification|regression"))
    classes = sorted(frame[target].dropna().unique().tolist(), key=str) if ptype == "multiclass_classification" else []

    taken = {target}
    if timestamp:
        ts, why = timestamp, "given"
    else:
        ts, why = infer_timestamp(frame, taken)
    guesses.append(Guess("columns.timestamp", ts, why, "--timestamp COLUMN"))
    taken.add(ts)
    if id_column:
        ident, why = id_column, "given"
    else:
        ident, why = infer_id(frame, taken)
    guesses.append(Guess("columns.id", ident, why, "--id COLUMN"))
    taken.add(ident)
    for given, what in ((ts, "timestamp"), (ident, "id")):
        if given not in frame.columns:
            raise InitError(f"{what} column {given!r} is not a column of {reference}")

    shape = measure_stream(batches, labels, ident, ts) if batches else None
    # The serving columns: in the batches (a model served elsewhere) or in the reference.
    serving_frame = frame
    if shape is not None:
        first = io.read_table(io.list_batches(batches)[0].path)
        serving_frame = first
    serving = find_serving_columns(serving_frame, ptype, classes, taken)
    if not serving and serving_frame is not frame:
        serving = find_serving_columns(frame, ptype, classes, taken)
    reserved = taken | _flatten(serving.values())
    # Serving columns of the reference are never features, found or not.
    reserved |= {c for c in map(str, frame.columns) if c.lower().startswith(("y_pred", "predicted_"))}

    if features:
        unknown = [c for c in features if c not in frame.columns]
        if unknown:
            raise InitError(f"--features names columns the reference lacks: {unknown}")
        feats, left_out = list(features), {}
        cats = [c for c in feats if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    else:
        feats, cats, left_out = infer_features(frame, reserved)
    if categorical is not None:
        cats = [c for c in feats if c in set(categorical)]
    for f, score in leaking_features(frame, target, feats, ptype).items():
        notes.append(
            f"feature {f!r} alone predicts {target!r} almost perfectly on the reference ({score}): if it "
            "is only known after the outcome it leaks the label; remove it from columns.features"
        )
    guesses.append(Guess("columns.features", feats, f"{len(feats)} columns" + (f"; left out: {left_out}" if left_out else ""), "--features a,b,c or edit columns.features"))
    guesses.append(Guess("columns.categorical", cats, "text and boolean features", "--categorical a,b or edit columns.categorical"))

    columns: dict[str, Any] = {"id": ident, "timestamp": ts, "target": target}
    prediction = serving.get("prediction", "y_pred")
    columns["prediction"] = prediction
    if ptype == "binary_classification":
        columns["probability"] = serving.get("probability", "y_pred_proba")
    elif ptype == "multiclass_classification":
        columns["probability"] = serving.get("probability") or {str(k): f"y_pred_proba_{k}" for k in classes}
    else:
        columns["probability"] = None
    columns["model_version"] = serving.get("model_version", "model_version")
    where = "in the batches" if shape is not None else "in the reference"
    if "prediction" in serving:
        guesses.append(Guess("columns.prediction", prediction, f"the serving model's output {where}", "edit columns.prediction"))
    else:
        notes.append(
            f"no prediction columns {where}: the monitor scores each batch with the champion "
            f"(it writes {prediction!r}" + (f" and {columns['probability']!r}" if columns["probability"] else "") + ")"
        )
    columns["features"] = feats
    columns["categorical"] = cats

    metric = {"binary_classification": "roc_auc", "multiclass_classification": "roc_auc_ovr", "regression": "mae"}[ptype]
    guesses.append(Guess("metric", metric, f"the usual ranking metric for {ptype}", "edit metric"))

    data: dict[str, Any] = {
        "root": root or f".evergreen/{model_name}",
        "training_reference": _absolute(reference),
    }
    if batches:
        data["batches"] = _absolute(batches)
    if labels:
        data["labels"] = _absolute(labels)
    if shape is not None:
        data["rows_per_batch"] = shape.rows_per_batch
        guesses.append(Guess("data.rows_per_batch", shape.rows_per_batch, f"median of {shape.batches} batch files ({shape.min_rows:,}-{shape.max_rows:,} rows)", "edit data.rows_per_batch"))
        if shape.label_delay is not None:
            days = max(0, math.ceil(shape.label_delay / timedelta(days=1)))
            data["label_delay_days"] = days
            guesses.append(Guess("data.label_delay_days", days, "median delay of the label files after their batches", "edit data.label_delay_days"))
        if shape.cadence is not None:
            guesses.append(Guess("cadence", _human(shape.cadence), "median time between consecutive batches", "(informational)"))
    else:
        notes.append("no --batches folder: cadence and batch size are the defaults; rerun init with --batches to fit them")

    config: dict[str, Any] = {
        "name": model_name,
        "problem_type": ptype,
        "metric": metric,
        "columns": columns,
        "data": data,
    }
    if shape is not None and shape.cadence is not None:
        _add_stream_defaults(config, guesses, shape, reference_rows=len(frame))
    else:
        notes.append("the loop's settings (window, cooldown, gate and canary minimums) are the defaults: "
                     "rerun init with --batches holding two or more dated batches to fit them to the stream")
    config["mlflow"] = {
        "tracking_uri": tracking_uri or "sqlite:///.evergreen/mlflow.db",
        "artifact_root": ".evergreen/mlartifacts",
        "model_name": model_name,
    }
    return Inference(config=config, guesses=guesses, notes=notes, shape=shape)


def _add_stream_defaults(config: dict[str, Any], guesses: list[Guess], shape: StreamShape, reference_rows: int) -> None:
    """The loop's settings chosen for the stream's cadence and size (`decisions.defaults`)."""
    from evergreen.decisions.defaults import defaults_for

    assert shape.cadence is not None
    chosen = defaults_for(shape.cadence, shape.rows_per_batch, shape.label_delay, reference_rows)
    known = {g.field for g in guesses}
    for choice in chosen.choices:
        section, _, name = choice.field.partition(".")
        if choice.field in known:  # measured from the files: keep that reason
            continue
        config.setdefault(section, {})[name] = choice.value
        guesses.append(Guess(choice.field, choice.value, choice.reason, f"edit {choice.field}"))


def validate_inference(inference: Inference) -> None:
    """The inferred mapping is a valid Evergreen config (ConfigError names the field)."""
    try:
        parse_config(inference.config)
    except ConfigError as exc:
        raise InitError(f"the inferred config is not valid: {exc}") from None


def _model_name(reference: str) -> str:
    stem = PurePosixPath(reference).stem
    for suffix in ("_reference", "-reference", "_train", "-train", "_training"):
        stem = stem.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "model"
    return name


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def _flatten(values: Any) -> set[str]:
    out: set[str] = set()
    for v in values:
        if isinstance(v, dict):
            out |= {str(x) for x in v.values()}
        elif v is not None:
            out.add(str(v))
    return out


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{hours:g} hours"
    return f"{hours / 24:g} days"


# ----------------------------------------------------------------------------- rendering


def render_config(inference: Inference) -> str:
    """The config as commented YAML: each inferred field with its reason and how to change it."""
    import yaml

    comments = {g.field: g for g in inference.guesses}
    lines = [
        f"# Evergreen config for {inference.config['name']!r}, written by `evergreen init`.",
        "# Every inferred value says why; edit freely (the full list of fields: evergreen/config.py).",
    ]
    lines += [f"# note: {n}" for n in inference.notes]

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("...").strip()

    def emit(mapping: dict[str, Any], prefix: str, indent: int) -> None:
        pad = " " * indent
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            guess = comments.get(dotted)
            if guess is not None:
                text = f"{guess.why}" + (f" (change: {guess.change})" if guess.change else "")
                lines.append(f"{pad}# {text}")
            if isinstance(value, dict) and value and dotted != "columns.probability":
                lines.append(f"{pad}{key}:")
                emit(value, f"{dotted}.", indent + 2)
            elif isinstance(value, list) and value:
                lines.append(f"{pad}{key}:")
                lines.extend(f"{pad}  - {dump(v)}" for v in value)
            elif isinstance(value, dict) and value:
                lines.append(f"{pad}{key}:")
                lines.extend(f"{pad}  {dump(k)}: {dump(v)}" for k, v in value.items())
            else:
                lines.append(f"{pad}{key}: {dump(value)}")

    emit(inference.config, "", 0)
    return "\n".join(lines) + "\n"
