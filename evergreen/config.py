"""Typed configuration of one monitored model.

The same model is used by the YAML loader (`load_config`) and by the Prefect block in
`blocks/`; nothing here reads the environment or touches the disk at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

ProblemType = Literal["binary_classification", "multiclass_classification", "regression"]
# NannyML's univariate drift methods by column kind (nannyml.drift.univariate.methods): a
# closed list, so a typo fails when the config is read, and the Prefect UI's default form
# offers them as a multi-select instead of a JSON editor.
ContinuousMethod = Literal["jensen_shannon", "kolmogorov_smirnov", "wasserstein", "hellinger"]
CategoricalMethod = Literal["jensen_shannon", "chi2", "l_infinity", "hellinger"]
BINARY_METRICS = ("roc_auc", "f1", "accuracy", "precision", "recall")
# Multiclass metrics are macro averages over the classes (each class counts the same, however
# rare), named so: one-vs-rest ROC AUC, F1, precision and recall per class, then their mean.
# Accuracy is the share of rows whose predicted class (the most probable) is right.
MULTICLASS_METRICS = ("roc_auc_ovr", "f1_macro", "precision_macro", "recall_macro", "accuracy")
REGRESSION_METRICS = ("mae", "rmse", "mse", "mape")
METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": BINARY_METRICS,
    "multiclass_classification": MULTICLASS_METRICS,
    "regression": REGRESSION_METRICS,
}
DEFAULT_METRIC = {
    "binary_classification": "roc_auc",
    "multiclass_classification": "roc_auc_ovr",
    "regression": "rmse",
}
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "mape"})


def class_key(value: object) -> str:
    """A class label as the text the config's `columns.probability` keys are compared in.

    Class labels may be text or integers in the data, and YAML keys may be either: a label
    matches a key when both read the same as text, with integral numbers written without a
    decimal part (1, 1.0, "1" and numpy's 1 are all "1") and booleans as True/False. A JSON
    round trip (a Prefect block) turns every key into text, so the text is what counts.
    """
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str):
        value = item()  # a numpy scalar
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnRoles(_Section):
    """Which column plays which role in batches, labels and training data."""

    id: str = "id"
    timestamp: str = "timestamp"
    target: str
    prediction: str = "y_pred"
    probability: str | dict[str, str] | None = Field(
        "y_pred_proba",
        description=(
            "binary_classification: the positive-class probability column; "
            "multiclass_classification: a mapping class -> its probability column, one entry per "
            "class in the model's class order (e.g. {prepaid_card: y_pred_proba_prepaid_card, ...}); "
            "class keys match target values by their text (1, 1.0 and '1' are the same class)"
        ),
    )
    model_version: str = "model_version"
    features: list[str] = Field(min_length=1)
    categorical: list[str] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list, description="columns for per-slice metrics")

    @field_validator("probability", mode="before")
    @classmethod
    def _class_keys_as_text(cls, value: object) -> object:
        # YAML gives integer keys for integer classes ({0: p0, 1: p1}); JSON only text keys.
        if isinstance(value, dict):
            keys = [class_key(k) for k in value]
            if len(set(keys)) != len(keys):
                raise ValueError(
                    f"columns.probability names a class twice once keys are read as text: {list(value)}"
                )
            return dict(zip(keys, value.values(), strict=True))
        return value

    @model_validator(mode="after")
    def _check_subsets(self) -> ColumnRoles:
        unknown = [c for c in self.categorical if c not in self.features]
        if unknown:
            raise ValueError(f"columns.categorical names columns that are not features: {unknown}")
        unknown = [c for c in self.slices if c not in self.features]
        if unknown:
            raise ValueError(f"columns.slices names columns that are not features: {unknown}")
        if len(set(self.features)) != len(self.features):
            raise ValueError("columns.features lists a column twice")
        if isinstance(self.probability, dict):
            if len(self.probability) < 2:
                raise ValueError(
                    "columns.probability must map at least two classes to their probability columns"
                )
            if any(not k.strip() for k in self.probability):
                raise ValueError("columns.probability has an empty class name")
            names = list(self.probability.values())
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"columns.probability gives two classes the same column: {twice}")
        reserved = {self.id, self.timestamp, self.target, self.prediction, self.model_version}
        reserved.update(self.probability_columns)
        clash = sorted(reserved.intersection(self.features))
        if clash:
            raise ValueError(f"columns.features contains role columns: {clash}")
        return self

    @property
    def continuous(self) -> list[str]:
        return [c for c in self.features if c not in self.categorical]

    @property
    def classes(self) -> list[str] | None:
        """The classes of a multiclass model, in order (the keys of `probability`), as text
        (`class_key`); None when `probability` is one column or none."""
        return list(self.probability) if isinstance(self.probability, dict) else None

    @property
    def probability_columns(self) -> list[str]:
        """Every probability column: the one of a binary model, one per class of a
        multiclass model (in class order), none when `probability` is None."""
        if isinstance(self.probability, dict):
            return list(self.probability.values())
        return [self.probability] if self.probability else []


class DataConfig(_Section):
    """Where the data of the model lives. Relative paths resolve against `root`."""

    root: str = ".evergreen/data"
    training_reference: str = "reference.parquet"
    monitor_reference: str = "monitor_reference.parquet"
    batches: str = "batches"
    labels: str = "labels"
    predictions_log: str = "predictions"
    dataset_store: str = "datasets"
    state: str = "state"
    label_delay_days: int = Field(3, ge=0, le=365)
    rows_per_batch: int = Field(2500, ge=10)
    start_date: str = "2019-01-01"
    min_batch_rows: int = Field(1, ge=0)
    max_batch_rows: int = Field(5_000_000, ge=1)
    memory_rows: int = Field(
        1_048_576,
        ge=1000,
        description="rows held in memory at once where a batch or training window is larger: the "
        "monitor's pieces (NannyML, GX), GX's groups of a window; a larger batch is read in pieces "
        "and their results merged",
    )
    max_unknown_label_fraction: float = Field(
        0.1, ge=0, le=1, description="share of a labels file's ids that no batch served, tolerated"
    )

    def path(self, name: str) -> str:
        """Absolute path (or fsspec URL) of a data location named by a field."""
        value = getattr(self, name)
        if "://" in value or Path(value).is_absolute():
            return value
        root = self.root if "://" in self.root else str(Path(self.root).resolve())
        return f"{root.rstrip('/')}/{value}"


class MonitoringConfig(_Section):
    """Drift and performance thresholds; the decisions are made in the flow."""

    chunk_size: int | None = Field(None, ge=10, description="rows per NannyML chunk; default: whole batch")
    continuous_methods: list[ContinuousMethod] = Field(
        default_factory=lambda: ["jensen_shannon"], description="NannyML univariate drift methods for numeric features"
    )
    categorical_methods: list[CategoricalMethod] = Field(
        default_factory=lambda: ["jensen_shannon"], description="NannyML univariate drift methods for categorical features"
    )
    drifted_feature_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="share of features alerting that counts as drift (0.1: 2 of 20 features; "
        "tuned with `python -m bench policy`, see BENCHMARKS.md)",
    )
    multivariate_drift: bool = True
    performance_drop: float = Field(
        0.03, ge=0, le=1, description="allowed drop of the metric below the reference value"
    )
    metric_floor: float | None = Field(None, description="absolute floor on the estimated/realized metric")
    drop_sampling_errors: float = Field(
        2.0,
        ge=0,
        description="a performance alert needs the batch's estimated or realized metric worse than the reference "
        "by more than this many of its sampling errors (NannyML's, from the rows it rests on) besides "
        "performance_drop; otherwise the batch is reported as too small to estimate (0: no such check)",
    )
    plots: Literal["always", "on_alert"] = Field(
        "on_alert",
        description=(
            "NannyML plots logged to MLflow per batch: 'always' draws every plot for every batch "
            "(~2 s per batch for 20 features); 'on_alert' draws them all for batches that alert "
            "and, for quiet batches, NannyML's multivariate-drift and performance plots with a "
            "table of per-feature drift (~0.3 s)"
        ),
    )


class RetrainPolicyConfig(_Section):
    """When to retrain and on what window (the rules: evergreen/decisions/policy.py).

    The defaults are the policy `python -m bench policy` measures (BENCHMARKS.md): retrain on
    a drop of the estimated or realized metric or on feature drift, at most once per 7 days
    of data and 4 times per 30 days. Multivariate drift is computed and reported but does
    not trigger by default: NannyML fits its PCA on the reference it then scores, so on
    a reference of a few thousand rows production chunks sit just above the band and
    alerted on about one chunk in five of a stream without drift.

    The sliding window and the cooldown each take one unit: the window in days, batches
    or rows (`window_days` / `window_batches` / `window_rows`), the cooldown in hours of
    data or in batches (`cooldown_hours` / `cooldown_batches`). Setting one unit replaces
    the default (14 days, 168 hours); setting two of one setting is an error.
    `evergreen.decisions.defaults.defaults_for` chooses them from a stream's cadence and
    batch size.
    """

    window: Literal["sliding", "expanding"] = "sliding"
    window_days: int | None = Field(14, ge=1, description="sliding window: the last N days of data (default)")
    window_batches: int | None = Field(
        None, ge=1, description="sliding window: the newest N batches that have labelled rows"
    )
    window_rows: int | None = Field(None, ge=100, description="sliding window: the newest N labelled rows")
    include_reference: bool = True
    cooldown_hours: float | None = Field(
        168.0, ge=0, description="hours of data time between retrains (default)"
    )
    cooldown_batches: int | None = Field(
        None, ge=0, description="production batches received (in data.batches) since the newest version was trained"
    )
    hysteresis_k: int = Field(1, ge=1)
    hysteresis_n: int = Field(1, ge=1)
    min_new_rows: int = Field(0, ge=0)
    max_retrains_per_period: int = Field(4, ge=1)
    period_days: int = Field(30, ge=1)
    signals: list[Literal["estimated_drop", "realized_drop", "multivariate_drift", "feature_drift"]] = Field(
        default_factory=lambda: ["estimated_drop", "realized_drop", "feature_drift"]
    )
    episode_quiet_batches: int = Field(
        3, ge=1, description="quiet batches in a row that end an alert episode (one quiet batch amid drift is noise)"
    )
    min_post_change_rows: int | None = Field(
        None,
        ge=1,
        description="labelled rows from after an episode's change point that its retrain waits for; default: "
        "twice the gate's minimum (half to learn the new world from, half for the gate to judge on), at least "
        "two batches of data.rows_per_batch (the change may begin anywhere inside the first alerting batch)",
    )
    evidence_growth: float = Field(
        2.0, ge=1, description="another retrain for the same episode needs this many times the post-change rows of the last"
    )
    effect_sampling_errors: float | None = Field(
        2.0,
        ge=0,
        description=(
            "an episode's first retrain also waits until its labels show the change's effect: the champion's "
            "realized metric on the post-change labelled batches (pooled) differs from its reference by more than "
            "this many sampling errors (worse: the change cost accuracy; better: the world became easier, and a "
            "model trained on it may gain more). A drift the labels show no effect of gives a challenger nothing "
            "to learn; None: no such wait"
        ),
    )
    settle_growth: float | None = Field(
        3.0,
        ge=1,
        description=(
            "after an episode's retrain replaced the champion, a refresh once the post-change labelled rows "
            "reach this many times those it was trained with (the replacement learned the new world from its "
            "first days, the refresh from a window where it dominates), gated for an improvement; after each "
            "refresh the next waits for evidence_growth times its rows, while the model's window holds that "
            "many production rows; None: the episode ends with the replacement"
        ),
    )
    max_attempts_per_episode: int | None = Field(
        None,
        ge=1,
        description=(
            "retrains registered for one episode at most; None: no cap (evidence_growth paces the "
            "retries geometrically and the budget per period bounds them, so a gradual change that "
            "defeats the first attempts is retried once the new world has settled)"
        ),
    )
    post_change_weight: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of the training weight the post-change rows carry in an episode's retrain (0: plain rows)",
    )

    @model_validator(mode="after")
    def _check_hysteresis(self) -> RetrainPolicyConfig:
        if self.hysteresis_k > self.hysteresis_n:
            raise ValueError("retrain.hysteresis_k must be <= retrain.hysteresis_n")
        return self

    @model_validator(mode="after")
    def _one_unit_each(self) -> RetrainPolicyConfig:
        # A unit set explicitly replaces the default one (days, hours); two set explicitly
        # conflict: which one would hold is a guess the config must not leave to the code.
        settings = (("window_days", ("window_batches", "window_rows")), ("cooldown_hours", ("cooldown_batches",)))
        for default, others in settings:
            units = (default, *others)
            given = [f for f in units if f in self.model_fields_set and getattr(self, f) is not None]
            if len(given) > 1:
                setting = default.split("_")[0]
                raise ValueError(
                    f"retrain.{setting} is given in more than one unit ({', '.join(f'retrain.{f}' for f in given)}); "
                    f"keep one of {', '.join(f'retrain.{f}' for f in units)}"
                )
            if given and given[0] != default and default not in self.model_fields_set:
                setattr(self, default, None)
        return self

    @property
    def window_unit(self) -> tuple[str, float] | None:
        """The sliding window's size as (unit, value): ("days", 14), ("batches", 6) or
        ("rows", 5000); None when the window is expanding or unbounded."""
        if self.window == "expanding":
            return None
        return _one_unit(self, "window", ("days", "batches", "rows"))

    @property
    def cooldown_unit(self) -> tuple[str, float] | None:
        """The cooldown as ("hours", 168.0) or ("batches", 7); None when there is none."""
        return _one_unit(self, "cooldown", ("hours", "batches"))


def _one_unit(policy: RetrainPolicyConfig, setting: str, units: tuple[str, ...]) -> tuple[str, float] | None:
    given = [(u, getattr(policy, f"{setting}_{u}")) for u in units if getattr(policy, f"{setting}_{u}") is not None]
    if len(given) > 1:  # only a copy made without validation (model_copy) can get here
        names = ", ".join(f"retrain.{setting}_{u}" for u, _ in given)
        raise ConfigError(f"invalid Evergreen config:\n  retrain: {setting} is given in more than one unit ({names}); keep one")
    return given[0] if given else None


class TrainingConfig(_Section):
    """XGBoost training settings."""

    seed: int = 42
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)
    evaluation_fraction: float = Field(0.2, gt=0, lt=0.9)
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    params: dict[str, float | int | str] = Field(
        default_factory=lambda: {"max_depth": 6, "eta": 0.1, "subsample": 0.9, "colsample_bytree": 0.9}
    )
    search_budget_seconds: float = Field(0.0, ge=0, description="0 disables the hyperparameter search")
    nthread: int = Field(2, ge=1)
    refit_on_holdout: bool = Field(
        True,
        description="a retrain's registered model is refit on every labelled row of its window, the evaluation "
        "hold-out included, for the rounds early stopping chose; the evaluation, the monitor reference and the "
        "gate measure the model fit without the hold-out (its probe)",
    )


class GateConfig(_Section):
    """The validation gate a challenger must pass against the champion."""

    metric_floor: float | None = None
    mode: Literal["non_inferiority", "improvement"] = Field(
        "non_inferiority", description="for scheduled and manual retrains (a refresh: no worse than the champion)"
    )
    mode_on_alert: Literal["non_inferiority", "improvement"] = Field(
        "improvement",
        description="for a retrain an alert episode asked for: the champion is being replaced because it "
        "degraded, so the challenger must beat it on post-change rows",
    )
    margin: float = Field(0.005, ge=0, le=1)
    slice_margin: float = Field(0.03, ge=0, le=1)
    bootstrap_samples: int = Field(500, ge=50)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    calibration_margin: float = Field(0.01, ge=0, le=1)
    max_latency_ms: float = Field(250.0, gt=0, description="per 1,000 rows (generous: shared machines are noisy)")
    max_model_mb: float = Field(100.0, gt=0)
    seed: int = 7
    min_rows: int | None = Field(
        None,
        ge=10,
        description="fewest fresh labelled rows to gate on; default: two batches of data.rows_per_batch, "
        "at least 30, at most 500 (evergreen/decisions/defaults.py)",
    )
    evaluation_rows: int = Field(20_000, ge=100, description="most recent labelled rows used at most")
    cross_fit_folds: int = Field(
        4,
        ge=0,
        description="an alert episode's retrain cuts the window's post-change rows into this many folds by "
        "time and trains one probe without each, so the gate judges on every post-change row, each scored by a "
        "probe that learned from the others; 0 or 1: the gate judges the hold-out alone (BENCHMARKS.md)",
    )


class CanaryConfig(_Section):
    """Canary traffic share and how much evidence the review needs."""

    traffic_share: float = Field(0.2, ge=0, le=1)
    min_predictions: int | None = Field(
        None, ge=1, description="default: one batch of canary traffic, at least 30, at most 500"
    )
    min_labels: int | None = Field(
        None, ge=0, description="default: one batch of canary traffic, at least 30, at most 200"
    )
    window_hours: float = Field(24.0, ge=0)
    margin: float = Field(0.01, ge=0, le=1)


class ColumnLimits(_Section):
    """Values a column can never take, declared by the user: a batch holding one is rejected.

    `min`/`max` bound a numeric column (inclusive); `allowed` lists every value a column may
    take (a categorical one). Give either, not both.
    """

    min: float | None = None
    max: float | None = None
    allowed: list[StrictBool | StrictInt | StrictFloat | StrictStr] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check_bounds(self) -> ColumnLimits:
        bounded = self.min is not None or self.max is not None
        if not bounded and self.allowed is None:
            raise ValueError("give min and/or max (a numeric column) or allowed (its possible values)")
        if bounded and self.allowed is not None:
            raise ValueError("give either min/max or allowed, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ValidationConfig(_Section):
    """Which checks of a production batch reject it and which only report.

    Integrity checks reject the batch (it gets no drift estimate and no retrain trains on
    it): schema and types, nulls beyond the reference's share + `null_tolerance`, the
    `limits` declared here, duplicate ids, row counts (`data.min_batch_rows` /
    `data.max_batch_rows`), timestamps in the future, infinities, constant columns.
    Distribution checks never reject by default: values beyond the monitor reference's
    range (widened by `range_margin`) in more than `outside_range_share` of a column's
    values, or categories the reference never had in more than `unseen_category_share`,
    are reported per column and count as drift of that feature. `enforce_range` /
    `enforce_categories` make them reject for the columns named.
    """

    null_tolerance: float = Field(0.05, ge=0, le=1, description="null share allowed above the reference's")
    limits: dict[str, ColumnLimits] = Field(
        default_factory=dict, description="impossible values per feature: {col: {min, max} | {allowed: [...]}}"
    )
    enforce_range: list[str] = Field(
        default_factory=list, description="numeric features whose values beyond the reference range reject a batch"
    )
    enforce_categories: list[str] = Field(
        default_factory=list, description="categorical features whose unseen categories reject a batch"
    )
    range_margin: float = Field(
        0.5, ge=0, description="the reference's [min, max] widened by this share of its width on each side"
    )
    outside_range_share: float = Field(
        0.001, ge=0, lt=1, description="share of a column's values beyond its range that is reported (or rejects)"
    )
    unseen_category_share: float = Field(
        0.05, ge=0, lt=1, description="share of a column's values in unseen categories that is reported (or rejects)"
    )
    max_categories: int = Field(1000, ge=1, description="no category check above this many reference values")
    check_constant: bool = True
    min_rows_for_constant_check: int = Field(100, ge=2)
    clock_skew_seconds: float = Field(300.0, ge=0, description="timestamps may lead `now` by this much")

    def check_columns(self, columns: ColumnRoles) -> None:
        """ValueError naming each field of this section that names no feature (or the wrong kind)."""
        features, categorical = columns.features, set(columns.categorical)
        wrong: list[str] = []
        for i, name in enumerate(self.enforce_range):
            if name not in features:
                wrong.append(f"validation.enforce_range[{i}]: {name!r} is not a feature")
            elif name in categorical:
                wrong.append(f"validation.enforce_range[{i}]: {name!r} is categorical; use validation.enforce_categories")
        for i, name in enumerate(self.enforce_categories):
            if name not in features:
                wrong.append(f"validation.enforce_categories[{i}]: {name!r} is not a feature")
        for name, limit in self.limits.items():
            if name not in features:
                wrong.append(f"validation.limits.{name}: {name!r} is not a feature")
            elif name in categorical and (limit.min is not None or limit.max is not None):
                wrong.append(f"validation.limits.{name}: {name!r} is categorical; give allowed values, not min/max")
        if wrong:
            raise ValueError("; ".join(wrong) + f" (columns.features: {features})")


class MlflowConfig(_Section):
    """Where the model registry and tracking live."""

    tracking_uri: str = "sqlite:///.evergreen/mlflow.db"
    artifact_root: str = ".evergreen/mlartifacts"
    model_name: str
    monitoring_experiment: str = "evergreen-monitoring"
    training_experiment: str = "evergreen-training"
    ui_url: str = Field("http://127.0.0.1:5000", description="where people open the MLflow UI")
    username: str | None = None
    password: SecretStr | None = None

    def resolved_tracking_uri(self) -> str:
        """The tracking URI with a relative SQLite path made absolute (clients in any cwd)."""
        prefix = "sqlite:///"
        uri = self.tracking_uri
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(Path(uri[len(prefix) :]).resolve())
        return uri

    def resolved_artifact_root(self) -> str:
        root = self.artifact_root
        # A URI (s3://, file://, or the server-proxied mlflow-artifacts:/path) as it is.
        if "://" in root or root.startswith("mlflow-artifacts:"):
            return root
        return Path(root).resolve().as_uri()


class NotificationConfig(_Section):
    webhook_url: SecretStr | None = None


class ModelConfig(_Section):
    """Everything Evergreen needs to know about one monitored model."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    problem_type: ProblemType = "binary_classification"
    metric: str = "roc_auc"
    columns: ColumnRoles
    data: DataConfig = Field(default_factory=DataConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    retrain: RetrainPolicyConfig = Field(default_factory=RetrainPolicyConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    mlflow: MlflowConfig
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: object) -> object:
        # The metric defaults to the problem type's usual one (roc_auc, roc_auc_ovr, rmse).
        if isinstance(data, dict) and "metric" not in data:
            kind = data.get("problem_type", "binary_classification")
            if kind in DEFAULT_METRIC:
                return {**data, "metric": DEFAULT_METRIC[kind]}
        return data

    @model_validator(mode="after")
    def _check_metric(self) -> ModelConfig:
        allowed = METRICS[self.problem_type]
        if self.metric not in allowed:
            hint = (
                " (macro averages over the classes)"
                if self.problem_type == "multiclass_classification"
                else ""
            )
            raise ValueError(
                f"metric {self.metric!r} is not valid for {self.problem_type}; use one of {allowed}{hint}"
            )
        probability = self.columns.probability
        if self.problem_type == "binary_classification":
            if probability is None:
                raise ValueError("columns.probability is required for binary_classification")
            if isinstance(probability, dict):
                raise ValueError(
                    "columns.probability must be one column (the positive-class probability) for "
                    "binary_classification; a mapping class -> column is for multiclass_classification"
                )
        elif self.problem_type == "multiclass_classification":
            if not isinstance(probability, dict):
                raise ValueError(
                    "columns.probability must map each class to its probability column for "
                    "multiclass_classification, in the model's class order, e.g. "
                    "{prepaid_card: y_pred_proba_prepaid_card, highstreet_card: y_pred_proba_highstreet_card, ...}"
                )
        elif isinstance(probability, dict):
            raise ValueError(
                "columns.probability: a mapping class -> column is for multiclass_classification; "
                "regression has no probability (leave it out or set it to null)"
            )
        return self

    @model_validator(mode="after")
    def _check_validation_columns(self) -> ModelConfig:
        self.validation.check_columns(self.columns)
        return self

    @property
    def resource_id(self) -> str:
        """Prefect event resource id of this model (contract)."""
        from evergreen.events import resource_id

        return resource_id(self.name)

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def classes(self) -> list[str] | None:
        """The classes of a multiclass model in order, as text (`class_key`); else None."""
        return self.columns.classes if self.problem_type == "multiclass_classification" else None

    @property
    def probability_columns(self) -> list[str]:
        """The probability columns the model's outputs carry: one (binary), one per class
        (multiclass), none (regression)."""
        if self.problem_type == "regression":
            return []
        return self.columns.probability_columns


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


ALL_ROLES = ("id", "timestamp", "target", "prediction", "probability", "features")


def column_fields(columns: ColumnRoles, roles: tuple[str, ...] = ALL_ROLES) -> list[tuple[str, str]]:
    """(dotted config field, column name) of every column the config names in `roles`."""
    out: list[tuple[str, str]] = []
    for role in roles:
        value = getattr(columns, role)
        if isinstance(value, list):
            out += [(f"columns.{role}[{i}]", name) for i, name in enumerate(value)]
        elif isinstance(value, dict):
            out += [(f"columns.{role}.{key}", name) for key, name in value.items()]
        elif value is not None:
            out.append((f"columns.{role}", value))
    return out


def check_columns(
    columns: ColumnRoles, available: list[str], table: str, roles: tuple[str, ...] = ALL_ROLES
) -> None:
    """ConfigError naming each config field whose column `table` does not have."""
    import difflib

    wrong = [(field, name) for field, name in column_fields(columns, roles) if name not in available]
    if not wrong:
        return
    lines = []
    for field, name in wrong:
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"{field}: {name!r} is not a column of {table}{hint}")
    raise ConfigError(
        "invalid Evergreen config:\n  " + "\n  ".join(lines) + f"\n  ({table} has columns {available})"
    )


def parse_config(raw: dict) -> ModelConfig:
    """Validate a raw mapping; errors name the dotted field that is wrong."""
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc) from None


def config_error(exc: ValidationError, where: str = "") -> ConfigError:
    """A ConfigError listing each wrong dotted field of a pydantic validation error."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{field}: {err['msg']}")
    return ConfigError(f"invalid Evergreen config{where}:\n  " + "\n  ".join(lines))


def load_config(path: str | Path) -> ModelConfig:
    """Read a model config from a YAML file."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return parse_config(raw)
