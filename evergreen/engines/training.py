"""XGBoost training and inference for one monitored model.

Training and inference share `prepare_features`, which applies the category lists fixed at
training time, so a batch whose categories arrive in another order (or with new values)
is encoded exactly as the training data was. Models are stored in XGBoost's own UBJSON
format plus a small JSON metadata file; nothing here pickles or unpickles.

Multiclass: XGBoost's `multi:softprob` on the classes encoded 0..K-1 in the order of the
config's `columns.probability`; the metadata keeps the class labels (integers when the
training target held integers, else text), so a loaded model predicts labels as the data
writes them, and one probability per class in that order.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from evergreen.config import ColumnRoles, ModelConfig, ProblemType, class_key
from evergreen.decisions.evaluation import encode_classes

MODEL_FILE = "model.ubj"
# A training frame may carry each row's weight in this column (an episode's retrain weighs
# the rows from after the change more: `evergreen.decisions.window.post_change_weights`).
WEIGHT_COLUMN = "_evergreen_weight"
METADATA_FILE = "evergreen_model.json"
METADATA_FORMAT = 1
DEFAULT_THRESHOLD = 0.5
# mlflow.xgboost.log_model(extra_files=[...]) puts extra files in this subdirectory.
MLFLOW_EXTRA_FILES = "extra_files"
# The probe booster (`TrainedModel.probe`), next to the metadata.
PROBE_FILE = "probe.ubj"
# The cross-fit probes of an alert episode's retrain (`CrossFit`), next to the metadata.
CROSS_FIT_FILE = "cross_fit_{}.ubj"

# The search space of the optional hyperparameter search; small on purpose: the budget is
# meant for seconds to minutes on one machine, and these two parameters matter most.
SEARCH_MAX_DEPTH = (3, 4, 6, 8)
SEARCH_ETA = (0.03, 0.1, 0.3)


class TrainingError(ValueError):
    """Training data that cannot be used; the message names the column and the fix."""


@dataclass(frozen=True)
class Predictions:
    """Model output for a frame: the class (0/1 for binary, the class label for multiclass)
    or the value, and the probability: of the positive class (one per row), of each class
    (rows x classes, in `classes` order) or None (regression)."""

    prediction: np.ndarray
    probability: np.ndarray | None
    classes: list[Any] | None = None

    @property
    def scores(self) -> np.ndarray:
        """What the metrics score: the probabilities of a classifier, a regressor's values."""
        return self.probability if self.probability is not None else self.prediction


def output_columns(predictions: Predictions, columns: ColumnRoles) -> dict[str, np.ndarray]:
    """The model's outputs under the config's column names: the prediction, then the
    probability (binary) or one probability column per class (multiclass, named by
    `columns.probability`), as a prediction log, a batch or a monitor reference holds them."""
    out = {columns.prediction: predictions.prediction}
    if predictions.probability is None or not columns.probability:
        return out
    if predictions.classes is None:
        if isinstance(columns.probability, str):
            out[columns.probability] = predictions.probability
        return out
    if not isinstance(columns.probability, dict):
        raise ValueError(
            "a multiclass model needs columns.probability to map each class to its column"
        )
    for k, label in enumerate(predictions.classes):
        key = class_key(label)
        if key not in columns.probability:
            raise ValueError(
                f"the model predicts class {label!r}, which columns.probability does not name "
                f"(it names {list(columns.probability)}); retrain on the config's classes"
            )
        out[columns.probability[key]] = predictions.probability[:, k]
    return out


@dataclass(frozen=True)
class SearchTrial:
    """One evaluated hyperparameter candidate (score: validation loss, lower is better)."""

    params: dict[str, Any]
    best_iteration: int
    score: float


@dataclass(frozen=True)
class Fold:
    """One cross-fit probe: the recipe trained without the rows stamped `since` through
    `until` (both included), which it alone scores."""

    booster: xgb.Booster
    since: pd.Timestamp
    until: pd.Timestamp


@dataclass(frozen=True)
class CrossFit:
    """The cross-fit probes of an alert episode's retrain (`gate.cross_fit_folds`): the
    window's post-change rows cut by time into folds, and for each the same recipe (rounds,
    categories) trained on every other row of the window. Each post-change row is then
    scored by a probe that never saw it (`TrainedModel.cross_fitted`), a probe that learned
    from most of the new world, so the gate judges the challenger on all of them instead of
    the hold-out alone."""

    folds: list[Fold]
    column: str  # the timestamp column that says which probe scores a row

    @property
    def since(self) -> pd.Timestamp:
        return min(f.since for f in self.folds)

    def scorer(self, frame: pd.DataFrame) -> np.ndarray:
        """For each row of `frame`, the index of the fold that scores it (-1: none does)."""
        from evergreen.times import utc, utc_series

        if self.column not in frame.columns:
            raise ValueError(
                f"the cross-fit probes pick rows by their time: the frame has no {self.column!r} column"
            )
        stamps = utc_series(frame[self.column])
        which = np.full(len(frame), -1)
        for i, fold in enumerate(self.folds):
            which[((stamps >= utc(fold.since)) & (stamps <= utc(fold.until))).to_numpy()] = i
        return which

    def metadata(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "folds": [{"since": f.since.isoformat(), "until": f.until.isoformat()} for f in self.folds],
        }


@dataclass
class TrainedModel:
    """A trained booster with everything needed to score new data identically."""

    booster: xgb.Booster
    features: list[str]
    categories: dict[str, list[str]]
    problem_type: ProblemType
    best_iteration: int
    params: dict[str, Any]
    threshold: float = DEFAULT_THRESHOLD
    validation_score: float | None = None
    validation_metric: str | None = None
    n_train: int = 0
    n_validation: int = 0
    search: list[SearchTrial] = field(default_factory=list)
    classes: list[Any] | None = None  # multiclass: the class labels, in output order
    # The same recipe without the window's evaluation hold-out, when `booster` was refit on
    # it too (`train_model_chunks(final=...)`): what the evaluation, the monitor reference and
    # the gate measure, on rows it never saw (`held_out`).
    probe: xgb.Booster | None = None
    # An alert episode's cross-fit probes (`CrossFit`); only the cross-fitted view scores with them.
    cross_fit: CrossFit | None = None
    routed: bool = False  # the cross-fitted view: rows a fold covers are scored by its probe

    def held_out(self) -> TrainedModel:
        """The model to measure on the window's hold-out and on rows after it: the probe
        (same features, categories and rounds, trained without the hold-out) if there is
        one, else this model (it never trained on its hold-out)."""
        if self.probe is None:
            return self
        return dataclasses.replace(self, booster=self.probe, probe=None, cross_fit=None)

    def cross_fitted(self) -> TrainedModel:
        """What the gate measures: `held_out`, except that with cross-fit probes each
        post-change row of the window is scored by the probe of its fold, which did not
        train on it (`unseen_since`); rows after the window by the probe."""
        if self.cross_fit is None or self.probe is None:
            return self.held_out()
        return dataclasses.replace(self, booster=self.probe, probe=None, routed=True)

    def predict(self, df: pd.DataFrame) -> Predictions:
        """Score a frame holding (at least) the model's feature columns (and, in the
        cross-fitted view, its timestamp column)."""
        x = prepare_features(df, self.features, self.categories)
        raw = self.booster.predict(_dmatrix(x, nthread=_nthread(self.params)))
        if self.routed and self.cross_fit is not None and len(x):
            which = self.cross_fit.scorer(df)
            if (which >= 0).any():
                raw = np.array(raw, copy=True)
                for i, fold in enumerate(self.cross_fit.folds):
                    if (rows := which == i).any():
                        raw[rows] = fold.booster.predict(_dmatrix(x[rows], nthread=_nthread(self.params)))
        return self.outputs(raw)

    def outputs(self, raw: np.ndarray) -> Predictions:
        """Predictions from the booster's raw output (what `predict` and the serving fast
        path share): a 0/1 class at the threshold, the most probable class label (the first
        on a tie), or the value."""
        if self.problem_type == "binary_classification":
            proba = np.asarray(raw).astype(float)
            return Predictions(
                prediction=(proba >= self.threshold).astype(np.int64), probability=proba
            )
        if self.problem_type == "multiclass_classification":
            assert self.classes is not None
            proba = np.asarray(raw, dtype=float).reshape(-1, len(self.classes))
            labels = _label_array(self.classes)
            return Predictions(
                prediction=labels[np.argmax(proba, axis=1)] if len(proba) else labels[:0],
                probability=proba,
                classes=list(self.classes),
            )
        return Predictions(prediction=np.asarray(raw).astype(float), probability=None)

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature (0 for features the trees never split on)."""
        gain = self.booster.get_score(importance_type="total_gain")
        return {f: float(gain.get(f, 0.0)) for f in self.features}  # type: ignore[arg-type]

    def unseen_since(self) -> pd.Timestamp | None:
        """From when on (inclusive) the cross-fitted view scores every row with a booster
        that did not train on it, when the model knows it: a cross-fit model's change point
        (rows before it trained every probe). None: the version's `evergreen.train_end`
        says (rows after it)."""
        return self.cross_fit.since if self.cross_fit is not None and self.probe is not None else None

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata stored next to the booster."""
        return {
            "format": METADATA_FORMAT,
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "problem_type": self.problem_type,
            "threshold": self.threshold,
            "best_iteration": self.best_iteration,
            "params": self.params,
            "validation_score": self.validation_score,
            "validation_metric": self.validation_metric,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "classes": None if self.classes is None else list(self.classes),
            "probe": self.probe is not None,
            **({"cross_fit": self.cross_fit.metadata()} if self.cross_fit is not None else {}),
        }

    def to_bytes(self) -> bytes:
        """The booster in XGBoost's UBJSON format (deterministic; use it for hashing)."""
        return bytes(self.booster.save_raw(raw_format="ubj"))

    def save(self, directory: str) -> None:
        """Write `model.ubj` and `evergreen_model.json` into `directory` (any fsspec path)."""
        fs, root = _fs(directory)
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/{MODEL_FILE}", "wb") as fh:
            fh.write(self.to_bytes())
        with fs.open(f"{root}/{METADATA_FILE}", "w") as fh:
            json.dump(self.metadata(), fh, indent=2, sort_keys=True)
        for name, data in self.extra_boosters().items():
            with fs.open(f"{root}/{name}", "wb") as fh:
                fh.write(data)

    def probe_bytes(self) -> bytes:
        """The probe booster in XGBoost's UBJSON format."""
        assert self.probe is not None
        return bytes(self.probe.save_raw(raw_format="ubj"))

    def extra_boosters(self) -> dict[str, bytes]:
        """The files beside the booster and the metadata: the probe and the cross-fit probes
        (UBJSON), as `save` writes them and `load` reads them."""
        files = {}
        if self.probe is not None:
            files[PROBE_FILE] = self.probe_bytes()
        for i, fold in enumerate(self.cross_fit.folds if self.cross_fit is not None else []):
            files[CROSS_FIT_FILE.format(i)] = bytes(fold.booster.save_raw(raw_format="ubj"))
        return files

    @classmethod
    def load(cls, directory: str) -> TrainedModel:
        """Read a model written by `save` (or an MLflow xgboost model directory holding the
        metadata as an extra file); never unpickles anything."""
        fs, root = _fs(directory)
        model_path, meta_path = f"{root}/{MODEL_FILE}", f"{root}/{METADATA_FILE}"
        extra = root
        if not fs.exists(meta_path) and fs.exists(f"{root}/{MLFLOW_EXTRA_FILES}/{METADATA_FILE}"):
            extra = f"{root}/{MLFLOW_EXTRA_FILES}"
            meta_path = f"{extra}/{METADATA_FILE}"
        for p in (model_path, meta_path):
            if not fs.exists(p):
                raise FileNotFoundError(
                    f"{p}: missing; is {directory} a directory written by TrainedModel.save?"
                )
        with fs.open(meta_path, "r") as fh:
            meta = json.load(fh)
        if meta.get("format") != METADATA_FORMAT:
            raise ValueError(f"{meta_path}: unsupported metadata format {meta.get('format')!r}")
        booster = xgb.Booster()
        with fs.open(model_path, "rb") as fh:
            booster.load_model(bytearray(fh.read()))
        if list(booster.feature_names or []) != list(meta["features"]):
            raise ValueError(
                f"{model_path}: booster features {booster.feature_names} differ from "
                f"{meta_path} features {meta['features']}; the two files come from different models"
            )

        def extra_booster(name: str, what: str) -> xgb.Booster:
            path = f"{extra}/{name}"
            if not fs.exists(path):
                raise FileNotFoundError(f"{path}: missing; {meta_path} says the model has a {what}")
            loaded = xgb.Booster()
            with fs.open(path, "rb") as fh:
                loaded.load_model(bytearray(fh.read()))
            return loaded

        probe = extra_booster(PROBE_FILE, "probe booster") if meta.get("probe") else None
        cross_fit = None
        if fitted := meta.get("cross_fit"):
            folds = [
                Fold(extra_booster(CROSS_FIT_FILE.format(i), "cross-fit probe"), pd.Timestamp(f["since"]), pd.Timestamp(f["until"]))
                for i, f in enumerate(fitted["folds"])
            ]
            cross_fit = CrossFit(folds, fitted["column"])
        return cls(
            booster=booster,
            features=list(meta["features"]),
            categories={k: list(v) for k, v in meta["categories"].items()},
            problem_type=meta["problem_type"],
            best_iteration=int(meta["best_iteration"]),
            params=dict(meta["params"]),
            threshold=float(meta["threshold"]),
            validation_score=meta.get("validation_score"),
            validation_metric=meta.get("validation_metric"),
            n_train=int(meta.get("n_train", 0)),
            n_validation=int(meta.get("n_validation", 0)),
            classes=meta.get("classes"),
            probe=probe,
            cross_fit=cross_fit,
        )


def fit_categories(df: pd.DataFrame, columns: ColumnRoles) -> dict[str, list[str]]:
    """Sorted category values (as strings) of each categorical feature, fixed at training time.

    Booleans become "True"/"False" and integral floats lose their ".0", so a column read as
    int in one file and as float (because of a null) in another maps to the same category.
    """
    _require_columns(df, columns.categorical, "training data")
    return {
        c: sorted(_as_category_strings(df[c]).dropna().unique().tolist())
        for c in columns.categorical
    }


def prepare_features(
    df: pd.DataFrame, columns: ColumnRoles | list[str], categories: dict[str, list[str]]
) -> pd.DataFrame:
    """A new frame with exactly the feature columns, in order, typed for XGBoost.

    Categorical features become pandas Categoricals over the fixed `categories` (values not
    seen in training become NaN, which XGBoost treats as missing); every other feature
    becomes float (values that are not numbers become NaN).
    """
    features = columns.features if isinstance(columns, ColumnRoles) else list(columns)
    _require_columns(df, features, "input frame")
    out: dict[str, pd.Series] = {}
    for name in features:
        col = df[name]
        if name in categories:
            dtype = pd.CategoricalDtype(categories=categories[name], ordered=False)
            out[name] = _as_categorical(col, dtype)
        else:
            out[name] = pd.to_numeric(col, errors="coerce").astype(float)
    return pd.DataFrame(out, index=df.index)


@dataclass(frozen=True)
class TimeSplit:
    """A time-ordered split: the last rows (by timestamp) are the validation set."""

    train: pd.DataFrame
    validation: pd.DataFrame


def split_by_time(df: pd.DataFrame, timestamp: str, validation_fraction: float) -> TimeSplit:
    """Sort by `timestamp` (stable) and hold out the last `validation_fraction` of the rows."""
    _require_columns(df, [timestamp], "training data")
    ordered = df.assign(_ts=pd.to_datetime(df[timestamp])).sort_values("_ts", kind="mergesort")
    ordered = ordered.drop(columns="_ts")
    n_val = int(round(len(ordered) * validation_fraction))
    n_val = min(max(n_val, 1), len(ordered) - 1)
    return TimeSplit(
        train=ordered.iloc[: len(ordered) - n_val], validation=ordered.iloc[len(ordered) - n_val :]
    )


def train_model(df: pd.DataFrame, config: ModelConfig, *, refit_full: bool = True) -> TrainedModel:
    """Train an XGBoost model on labelled rows, deterministic for the same data and seed.

    The last `training.validation_fraction` of the rows by time is the early-stopping set.
    A `WEIGHT_COLUMN` in `df` weighs the rows (training, early stopping and the refit).
    With `refit_full` the final booster is retrained on all rows for the number of rounds
    early stopping chose, so the most recent data (the most relevant under drift) is not
    left out of the model. `training.search_budget_seconds > 0` first searches max_depth and
    eta in a seeded order until the budget is spent.
    """
    cols, training = config.columns, config.training
    labelled = _labelled_rows(df, cols, config)
    _check_feature_types(labelled, cols)
    if len(labelled) < 10:
        raise TrainingError(
            f"only {len(labelled)} labelled rows in the training data; need at least 10"
        )
    categories = fit_categories(labelled, cols)
    split = split_by_time(labelled, cols.timestamp, training.validation_fraction)
    dtrain = _dmatrix(
        prepare_features(split.train, cols, categories),
        _labels(split.train, config),
        training.nthread,
        _weights(split.train),
    )
    dval = _dmatrix(
        prepare_features(split.validation, cols, categories),
        _labels(split.validation, config),
        training.nthread,
        _weights(split.validation),
    )
    base = _base_params(config)
    trials = _search(base, config, dtrain, dval) if training.search_budget_seconds > 0 else []
    params = min(trials, key=lambda t: t.score).params if trials else base
    booster = _fit(params, dtrain, dval, training.num_boost_round, training.early_stopping_rounds)
    best_iteration = int(booster.best_iteration)
    score, metric = float(booster.best_score), str(params["eval_metric"][-1])
    if refit_full:
        booster = _refit(params, labelled, categories, config, best_iteration + 1)
    else:
        # Keep only the trees early stopping chose, so every consumer predicts the same way.
        booster = booster[: best_iteration + 1]
    return TrainedModel(
        booster=booster,
        features=list(cols.features),
        categories=categories,
        problem_type=config.problem_type,
        best_iteration=best_iteration,
        params={**params, "refit_full": refit_full},
        validation_score=score,
        validation_metric=metric,
        n_train=len(split.train),
        n_validation=len(split.validation),
        search=trials,
        classes=class_labels(labelled[cols.target], config.classes)
        if config.classes is not None
        else None,
    )


def refit_on(model: TrainedModel, df: pd.DataFrame, config: ModelConfig) -> TrainedModel:
    """`model` refit on the labelled rows of `df` (e.g. its training rows plus its evaluation
    hold-out) with the same parameters, rounds and categories, as `train_model_chunks(final=...)`
    refits in memory; `model`'s booster is kept as the result's probe (`TrainedModel.held_out`).
    A `WEIGHT_COLUMN` in `df` weighs the rows."""
    labelled = _labelled_rows(df, config.columns, config)
    _check_feature_types(labelled, config.columns)
    params = {k: v for k, v in model.params.items() if k != "refit_full"}
    booster = _refit(params, labelled, model.categories, config, model.best_iteration + 1)
    return dataclasses.replace(model, booster=booster, probe=model.booster)


def _refit(
    params: dict[str, Any], labelled: pd.DataFrame, categories: dict[str, list[str]], config: ModelConfig, rounds: int
) -> xgb.Booster:
    """A booster trained on all of `labelled` (checked labelled rows) for `rounds` rounds, no
    early stopping: the refit of `train_model` and `refit_on`."""
    cols = config.columns
    dall = _dmatrix(
        prepare_features(labelled, cols, categories), _labels(labelled, config), config.training.nthread,
        _weights(labelled),
    )
    return xgb.train(params, dall, num_boost_round=rounds, verbose_eval=False)


# Roles of a row in `train_model_chunks` (a caller may add its own: `retraining.EVALUATE`);
# OTHER: left out of every matrix.
FIT, VALIDATE, OTHER = 0, 1, -1


RowReader = Callable[[list[str], "np.ndarray | None"], Iterable[tuple[int, pd.DataFrame]]]
"""`read(columns, needed)`: the rows of a table in order, in chunks, as (position of the
chunk's first row, frame of `columns`); a chunk none of whose rows is `needed` (a boolean
per row; None: all are) may be left out."""


def train_model_chunks(
    read: RowReader,
    roles: np.ndarray,
    config: ModelConfig,
    *,
    refit_full: bool = True,
    weights: np.ndarray | None = None,
    final: tuple[int, ...] | None = None,
    final_weights: np.ndarray | None = None,
    cross_fit: CrossFitPlan | None = None,
) -> TrainedModel:
    """`train_model` on rows read in chunks, with the memory of a chunk and XGBoost's
    quantized copy of the rows (~1 byte per feature and row), not of the rows themselves.

    `read` (a `RowReader`) yields the rows in the same order each time it is called (it is
    called once per pass: XGBoost reads the data twice per matrix); `roles[i]` says what the i-th
    row is for: FIT, VALIDATE (the early-stopping set: `train_model` takes the last
    `training.validation_fraction` by time) or anything else (left out). The rows reach
    XGBoost through its iterator interface (`xgboost.DataIter`) into a `QuantileDMatrix`;
    categories are fixed from the FIT and VALIDATE rows first, as `train_model` fixes them.
    Same settings, early stopping and refit on all FIT and VALIDATE rows as `train_model`;
    deterministic for the same rows, order and seed. `weights[i]` (optional) weighs the i-th
    row, as `WEIGHT_COLUMN` does in `train_model`.

    `final` (roles, e.g. FIT, VALIDATE and the evaluation hold-out's): the returned booster is
    refit once more, on the rows of those roles (weighed by `final_weights`), for the same
    rounds, so the model uses every labelled row once its rounds are chosen; the refit on FIT
    and VALIDATE alone is kept as its `probe` (`TrainedModel.held_out`). Categories stay
    those of the FIT and VALIDATE rows (the probe's codes): a category seen only in the
    other rows scores as unseen.

    `cross_fit` (with `final`): one probe per fold is trained, for the same rounds, on the
    rows of the `final` roles but those of its fold (`CrossFitPlan`), kept as `CrossFit`."""
    cols, training = config.columns, config.training
    roles = np.asarray(roles)
    scan = _scan_rows(read, roles, config)
    if scan.rows < 10:
        raise TrainingError(f"only {scan.rows} labelled rows in the training data; need at least 10")
    categories = {c: sorted(v) for c, v in scan.categories.items()}
    matrix = functools.partial(_quantile_matrix, read, roles, config, categories, weights=weights)
    dtrain = matrix((FIT,))
    dval = matrix((VALIDATE,), ref=dtrain)
    base = _base_params(config)
    trials = _search(base, config, dtrain, dval) if training.search_budget_seconds > 0 else []
    params = min(trials, key=lambda t: t.score).params if trials else base
    booster = _fit(params, dtrain, dval, training.num_boost_round, training.early_stopping_rounds)
    best_iteration = int(booster.best_iteration)
    score, metric = float(booster.best_score), str(params["eval_metric"][-1])
    n_train, n_validation = dtrain.num_row(), dval.num_row()
    del dtrain, dval

    def refit(row_roles: np.ndarray, wanted: tuple[int, ...], row_weights: np.ndarray | None) -> xgb.Booster:
        """The chosen recipe (params, rounds, categories) on the rows whose role is `wanted`;
        their matrix is let go once trained on."""
        rows = _quantile_matrix(read, row_roles, config, categories, wanted, weights=row_weights)
        return xgb.train(params, rows, num_boost_round=best_iteration + 1, verbose_eval=False)

    booster = refit(roles, (FIT, VALIDATE), weights) if refit_full else booster[: best_iteration + 1]
    probe = fitted = None
    if final is not None and np.isin(roles, final).sum() > np.isin(roles, (FIT, VALIDATE)).sum():
        probe = booster
        booster = refit(roles, tuple(final), weights if final_weights is None else final_weights)
        if cross_fit is not None and cross_fit.folds:
            folds = [
                Fold(refit(np.where(plan.left_out, OTHER, roles), tuple(final), plan.weights), plan.since, plan.until)
                for plan in cross_fit.folds
            ]
            fitted = CrossFit(folds, cross_fit.column)
    return TrainedModel(
        booster=booster,
        features=list(cols.features),
        categories=categories,
        problem_type=config.problem_type,
        best_iteration=best_iteration,
        params={**params, "refit_full": refit_full},
        validation_score=score,
        validation_metric=metric,
        n_train=n_train,
        n_validation=n_validation,
        search=trials,
        classes=scan.classes,
        probe=probe,
        cross_fit=fitted,
    )


@dataclass(frozen=True)
class FoldPlan:
    """The rows one cross-fit probe leaves out (`left_out[i]` for the window's i-th row: the
    post-change rows stamped `since` through `until`) and its weight per row."""

    left_out: np.ndarray
    weights: np.ndarray | None
    since: pd.Timestamp
    until: pd.Timestamp


@dataclass(frozen=True)
class CrossFitPlan:
    """What `train_model_chunks` trains the cross-fit probes on (`CrossFit`)."""

    folds: list[FoldPlan]
    column: str


@dataclass
class _Scan:
    rows: int = 0
    categories: dict[str, set[str]] = field(default_factory=dict)
    seen_classes: set[int] = field(default_factory=set)
    classes: list[Any] | None = None


def _scan_rows(read: RowReader, roles: np.ndarray, config: ModelConfig) -> _Scan:
    """One pass over the categorical features and the target of the rows to train on: their
    categories, the classes present, and the targets' checks (`_labelled_rows`)."""
    cols = config.columns
    scan = _Scan(categories={c: set() for c in cols.categorical})
    for start, chunk in read([*cols.categorical, cols.target], np.isin(roles, (FIT, VALIDATE))):
        used = _rows_of(chunk, roles, start, (FIT, VALIDATE))
        labelled = _labelled_rows(used, cols, config) if config.classes is None else used[used[cols.target].notna()]
        if config.classes is not None:
            if scan.classes is None and len(labelled):
                scan.classes = class_labels(labelled[cols.target], config.classes)
            try:
                codes = encode_classes(labelled[cols.target], config.classes, f"target column {cols.target!r}")
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            scan.seen_classes |= {int(c) for c in np.unique(codes)}
        scan.rows += len(labelled)
        for c in cols.categorical:
            scan.categories[c] |= _category_values(labelled[c])
    if config.classes is not None and len(scan.seen_classes) < 2:
        found = [config.classes[c] for c in sorted(scan.seen_classes)]
        raise TrainingError(
            f"target column {cols.target!r} holds {len(scan.seen_classes)} of the classes {config.classes} "
            f"({found}); a multiclass model needs rows of at least two"
        )
    return scan


def _category_values(col: pd.Series) -> set[str]:
    """The distinct category strings of a column's values (`_as_category_strings`)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = col.cat.categories[np.unique(col.cat.codes.to_numpy()[col.cat.codes.to_numpy() >= 0])]
        return {_category_string(v) for v in present}
    return set(_as_category_strings(col).dropna().unique().tolist())


def _rows_of(chunk: pd.DataFrame, roles: np.ndarray, start: int, wanted: tuple[int, ...]) -> pd.DataFrame:
    """The rows of a chunk (rows `start`.. of the data) whose role is one of `wanted`."""
    if start + len(chunk) > len(roles):
        raise TrainingError(
            f"the training data has more rows ({start + len(chunk)}+) than roles were given ({len(roles)})"
        )
    mask = np.isin(roles[start : start + len(chunk)], wanted)
    return chunk if mask.all() else chunk.loc[mask]


class _Rows(xgb.DataIter):
    """The rows of the given roles, as prepared features and labels, chunk by chunk."""

    def __init__(self, read: RowReader, roles: np.ndarray, config: ModelConfig, categories: dict[str, list[str]],
                 wanted: tuple[int, ...], weights: np.ndarray | None = None) -> None:
        self._read, self._roles, self._config = read, roles, config
        self._categories, self._wanted, self._weights = categories, wanted, weights
        self._batches: Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray | None]] | None = None
        super().__init__(release_data=True)

    def _prepared(self) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray | None]]:
        cols = self._config.columns
        needed = np.isin(self._roles, self._wanted)
        for start, chunk in self._read([*cols.features, cols.target], needed):
            rows = _rows_of(chunk, self._roles, start, self._wanted)
            weight = None
            if self._weights is not None:
                weight = self._weights[start : start + len(chunk)][needed[start : start + len(chunk)]]
            labelled = rows[cols.target].notna().to_numpy()
            rows = rows[labelled]
            if len(rows):
                _check_feature_types(rows, cols)
                yield (
                    prepare_features(rows, cols, self._categories),
                    _labels(rows, self._config),
                    None if weight is None else weight[labelled],
                )

    def reset(self) -> None:
        if self._batches is not None:
            self._batches.close()  # type: ignore[attr-defined]
        self._batches = None

    def next(self, input_data: Callable) -> bool:
        if self._batches is None:
            self._batches = self._prepared()
        batch = next(self._batches, None)
        if batch is None:
            return False
        input_data(data=batch[0], label=batch[1], weight=batch[2])
        return True


def _quantile_matrix(
    read: RowReader,
    roles: np.ndarray,
    config: ModelConfig,
    categories: dict[str, list[str]],
    wanted: tuple[int, ...],
    ref: xgb.DMatrix | None = None,
    weights: np.ndarray | None = None,
) -> xgb.QuantileDMatrix:
    rows = _Rows(read, roles, config, categories, wanted, weights)
    try:
        return xgb.QuantileDMatrix(rows, ref=ref, enable_categorical=True, nthread=config.training.nthread)
    finally:
        rows.reset()


def train_model_dask(
    client: Any, uri: str, roles: np.ndarray, config: ModelConfig, *, refit_full: bool = True
) -> TrainedModel:
    """`train_model_chunks` on a Dask cluster, for a window one machine cannot train on in
    time: each row group of the Parquet table at `uri` (a published snapshot's data file,
    on a path every worker reads: shared disk, s3://...) is read and prepared by a worker,
    and `xgboost.dask` trains on the workers' `DaskQuantileDMatrix` (early stopping on the
    VALIDATE rows, refit on FIT and VALIDATE, the same settings and fixed categories).
    `client` is a `distributed.Client` (a `LocalCluster`'s, or a scheduler's address)."""
    import dask
    import dask.dataframe as dd
    import xgboost.dask as dxgb

    from evergreen.adapters import io

    cols, training = config.columns, config.training
    roles = np.asarray(roles)
    dictionary = list(cols.categorical)

    def read(columns: list[str], needed: np.ndarray | None) -> Iterator[tuple[int, pd.DataFrame]]:
        import pyarrow.parquet as pq

        fs, p = io._fs(uri)
        with fs.open(p, "rb") as fh:
            pf = pq.ParquetFile(fh, read_dictionary=[c for c in dictionary if c in columns] or None)
            start = 0
            for g in range(pf.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if needed is None or needed[start : start + rows].any():
                    yield start, pf.read_row_group(g, columns=columns).to_pandas(split_blocks=True)
                start += rows

    scan = _scan_rows(read, roles, config)
    if scan.rows < 10:
        raise TrainingError(f"only {scan.rows} labelled rows in the training data; need at least 10")
    categories = {c: sorted(v) for c, v in scan.categories.items()}
    groups = _row_groups(uri)

    def load(start: int, group: int, wanted: tuple[int, ...]) -> pd.DataFrame:
        import pyarrow.parquet as pq

        fs, p = io._fs(uri)
        with fs.open(p, "rb") as fh:
            frame = pq.ParquetFile(fh).read_row_group(group, columns=[*cols.features, cols.target]).to_pandas()
        rows = _rows_of(frame, roles, start, wanted)
        rows = rows[rows[cols.target].notna()]
        out = prepare_features(rows, cols, categories)
        out["__label"] = _labels(rows, config)
        return out.reset_index(drop=True)

    meta = prepare_features(pd.DataFrame({c: pd.Series([], dtype=float) for c in [*cols.features, cols.target]}), cols, categories)
    meta["__label"] = pd.Series([], dtype=float)

    def matrix(wanted: tuple[int, ...], ref: Any = None) -> Any:
        parts = [
            dask.delayed(load)(start, g, wanted)
            for g, (start, rows) in enumerate(groups)
            if np.isin(roles[start : start + rows], wanted).any()
        ]
        frame = dd.from_delayed(parts, meta=meta)
        return dxgb.DaskQuantileDMatrix(
            client, frame[list(cols.features)], frame["__label"], ref=ref, enable_categorical=True
        )

    params = _base_params(config)
    dtrain = matrix((FIT,))
    dval = matrix((VALIDATE,), ref=dtrain)
    fitted = dxgb.train(
        client, params, dtrain, num_boost_round=training.num_boost_round, evals=[(dval, "validation")],
        early_stopping_rounds=training.early_stopping_rounds, verbose_eval=False,
    )
    booster = fitted["booster"]
    best_iteration = int(booster.best_iteration)
    score, metric = float(booster.best_score), str(params["eval_metric"][-1])
    n_train, n_validation = int((roles == FIT).sum()), int((roles == VALIDATE).sum())
    if refit_full:
        booster = dxgb.train(client, params, matrix((FIT, VALIDATE)), num_boost_round=best_iteration + 1)["booster"]
    else:
        booster = booster[: best_iteration + 1]
    return TrainedModel(
        booster=booster,
        features=list(cols.features),
        categories=categories,
        problem_type=config.problem_type,
        best_iteration=best_iteration,
        params={**params, "refit_full": refit_full},
        validation_score=score,
        validation_metric=metric,
        n_train=n_train,
        n_validation=n_validation,
        classes=scan.classes,
    )


def _row_groups(uri: str) -> list[tuple[int, int]]:
    """(first row, rows) of each row group of a Parquet file."""
    import pyarrow.parquet as pq

    from evergreen.adapters import io

    fs, p = io._fs(uri)
    with fs.open(p, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    out, start = [], 0
    for g in range(meta.num_row_groups):
        rows = meta.row_group(g).num_rows
        out.append((start, rows))
        start += rows
    return out


def class_labels(target: pd.Series, classes: list[str]) -> list[Any]:
    """The config's classes (text keys) as the target column writes them: integers when it
    holds numbers and every class reads as an integer, else text. Predictions carry these
    labels, so they compare equal to the labels that arrive later."""
    numeric = pd.api.types.is_numeric_dtype(target.dtype) and not pd.api.types.is_bool_dtype(
        target.dtype
    )
    if numeric and all(k.lstrip("-").isdigit() for k in classes):
        return [int(k) for k in classes]
    return list(classes)


def _base_params(config: ModelConfig) -> dict[str, Any]:
    kind = config.problem_type
    if kind == "binary_classification":
        # The last metric drives early stopping: logloss is smoother than AUC.
        task: dict[str, Any] = {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"]}
    elif kind == "multiclass_classification":
        assert config.classes is not None
        task = {
            "objective": "multi:softprob",
            "num_class": len(config.classes),
            "eval_metric": ["mlogloss"],
        }
    else:
        task = {"objective": "reg:squarederror", "eval_metric": ["rmse"]}
    fixed = {
        **task,
        "tree_method": "hist",
        "seed": config.training.seed,
        "nthread": config.training.nthread,
    }
    return {**config.training.params, **fixed}


def _fit(
    params: dict[str, Any], dtrain: xgb.DMatrix, dval: xgb.DMatrix, rounds: int, patience: int
) -> xgb.Booster:
    return xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=patience,
        verbose_eval=False,
    )


def _search(
    base: dict[str, Any], config: ModelConfig, dtrain: xgb.DMatrix, dval: xgb.DMatrix
) -> list[SearchTrial]:
    """Evaluate the base params, then seeded-random grid points, until the budget is spent."""
    training = config.training
    grid = [(d, e) for d in SEARCH_MAX_DEPTH for e in SEARCH_ETA]
    order = np.random.default_rng(training.seed).permutation(len(grid))
    candidates = [base] + [{**base, "max_depth": grid[i][0], "eta": grid[i][1]} for i in order]
    deadline = time.monotonic() + training.search_budget_seconds
    trials: list[SearchTrial] = []
    for params in candidates:
        if trials and time.monotonic() >= deadline:
            break
        booster = _fit(
            params, dtrain, dval, training.num_boost_round, training.early_stopping_rounds
        )
        trials.append(
            SearchTrial(
                params=params,
                best_iteration=int(booster.best_iteration),
                score=float(booster.best_score),
            )
        )
    return trials


def _labelled_rows(df: pd.DataFrame, cols: ColumnRoles, config: ModelConfig) -> pd.DataFrame:
    _require_columns(df, [cols.target], "training data")
    if config.problem_type == "multiclass_classification":
        return _labelled_classes(df, cols, config)
    problem_type = config.problem_type
    target = pd.to_numeric(df[cols.target], errors="coerce")
    bad = df[cols.target].notna() & target.isna()
    if bad.any():
        example = df.loc[bad, cols.target].iloc[0]
        raise TrainingError(
            f"target column {cols.target!r} holds non-numeric values such as {example!r}"
        )
    labelled = df.loc[target.notna()]
    if problem_type == "binary_classification":
        values = set(pd.unique(target.dropna()))
        if not values <= {0, 1}:
            raise TrainingError(
                f"target column {cols.target!r} must hold 0/1 for binary_classification; found {sorted(values)[:5]}"
            )
    return labelled


def _labelled_classes(df: pd.DataFrame, cols: ColumnRoles, config: ModelConfig) -> pd.DataFrame:
    """The rows with a target, every target one of the config's classes (matched as text)."""
    assert config.classes is not None
    try:
        codes = encode_classes(df[cols.target], config.classes, f"target column {cols.target!r}")
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    present = ~np.isnan(codes)
    seen = sorted({int(c) for c in codes[present]})
    if len(seen) < 2:
        found = [config.classes[c] for c in seen]
        raise TrainingError(
            f"target column {cols.target!r} holds {len(seen)} of the classes {config.classes} "
            f"({found}); a multiclass model needs rows of at least two"
        )
    return df.loc[present]


def _check_feature_types(df: pd.DataFrame, cols: ColumnRoles) -> None:
    _require_columns(df, cols.features, "training data")
    for name in cols.continuous:
        if not (pd.api.types.is_numeric_dtype(df[name]) or pd.api.types.is_bool_dtype(df[name])):
            raise TrainingError(
                f"feature {name!r} has dtype {df[name].dtype} but is not listed in columns.categorical; "
                "add it there or convert it to numbers"
            )


def _labels(df: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    target = df[config.columns.target]
    if config.classes is not None:  # class codes 0..K-1 in the config's order
        return encode_classes(target, config.classes)
    return pd.to_numeric(target).to_numpy(dtype=float)


def _label_array(classes: list[Any]) -> np.ndarray:
    """The class labels as the array predictions index: int64 for integer labels."""
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.asarray(classes, dtype=np.int64)
    out = np.empty(len(classes), dtype=object)
    out[:] = [str(c) for c in classes]
    return out


def _dmatrix(
    x: pd.DataFrame, label: np.ndarray | None = None, nthread: int = 1, weight: np.ndarray | None = None
) -> xgb.DMatrix:
    return xgb.DMatrix(x, label=label, weight=weight, enable_categorical=True, nthread=nthread)


def _weights(df: pd.DataFrame) -> np.ndarray | None:
    """The rows' training weights (`WEIGHT_COLUMN`, set by an episode's retrain), if any."""
    return df[WEIGHT_COLUMN].to_numpy(dtype=float) if WEIGHT_COLUMN in df.columns else None


def _nthread(params: dict[str, Any]) -> int:
    return int(params.get("nthread", 1))


def _as_category_strings(col: pd.Series) -> pd.Series:
    """Category values as strings; nulls stay null. Mapped per unique value (cheap)."""
    if col.dtype == _STR:
        # Already strings (pandas' default text dtype, Arrow-backed): every value is its own
        # category string. Going through Python objects would create one per row (seconds
        # and ~100 MB per million rows) to get the same values back.
        return col
    values = col.astype(object)
    uniques = pd.unique(values[values.notna()])
    mapping = {v: _category_string(v) for v in uniques}
    return values.map(mapping).astype(object)


_STR = pd.api.types.pandas_dtype("str")


def _as_categorical(col: pd.Series, dtype: pd.CategoricalDtype) -> pd.Series:
    """`_as_category_strings(col).astype(dtype)`, by the column's distinct values: a text
    column is dictionary-encoded (Arrow), a Categorical recoded, so no string is made or
    hashed per row (the categories of a chunk of a million rows: ~0.3 s -> ~0.02 s)."""
    if col.dtype == _STR or isinstance(col.dtype, pd.CategoricalDtype):
        if isinstance(col.dtype, pd.CategoricalDtype):
            values, codes = col.cat.categories, col.cat.codes.to_numpy()
        else:
            import pyarrow as pa
            import pyarrow.compute as pc

            encoded = pc.dictionary_encode(pa.array(col.array))
            if isinstance(encoded, pa.ChunkedArray):
                encoded = encoded.combine_chunks()
            values = pd.Index(encoded.dictionary.to_pylist(), dtype=object)
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        strings = values if col.dtype == _STR else pd.Index([_category_string(v) for v in values], dtype=object)
        recode = dtype.categories.get_indexer(strings) if len(strings) else np.zeros(0, dtype=np.int64)
        mapped = np.where(codes >= 0, recode[np.maximum(codes, 0)] if len(recode) else -1, -1)
        return pd.Series(pd.Categorical.from_codes(mapped, dtype=dtype), index=col.index, name=col.name)
    return _as_category_strings(col).astype(dtype)


def _category_string(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _require_columns(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise KeyError(f"{what} lacks columns {missing}; it has {list(df.columns)}")


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, str(PurePosixPath(paths[0]))
