"""A user's own trained XGBoost model, taken in as a `TrainedModel`.

The model may be a native XGBoost model file (`.ubj`, `.json`, any fsspec path) or an MLflow
model of the xgboost flavor (`models:/name/3`, `models:/name@alias`, `runs:/<id>/model`, or a
local MLflow model folder). Nothing is unpickled: MLflow's xgboost flavor stores the booster
in XGBoost's own format. The booster must take the config's feature columns (XGBoost keeps
their names in the model); categorical features use the categories the model stored when it
was trained (XGBoost >= 3.1 keeps them and re-codes inputs by value), else those of the
reference.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pandas as pd
import xgboost as xgb

from evergreen.config import ModelConfig
from evergreen.engines.training import TrainedModel, class_labels, fit_categories

_OBJECTIVES = {
    "binary_classification": ("binary:logistic", "binary:logitraw", "binary:hinge"),
    # multi:softmax outputs one class index per row, not probabilities: NannyML's CBPE needs them.
    "multiclass_classification": ("multi:softprob",),
    "regression": (
        "reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:squaredlogerror",
        "reg:tweedie", "reg:gamma", "count:poisson", "reg:quantileerror",
    ),
}


class ModelImportError(ValueError):
    """A model Evergreen cannot take in; the message names the model and what to change."""


def load_booster(source: str) -> xgb.Booster:
    """The booster of a native model file or an MLflow xgboost model."""
    if _is_mlflow(source):
        import mlflow.xgboost

        try:
            loaded = mlflow.xgboost.load_model(source)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; name the source
            raise ModelImportError(f"cannot load MLflow model {source!r} with the xgboost flavor: {exc}") from exc
        return loaded.get_booster() if hasattr(loaded, "get_booster") else loaded
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(source)
    if not fs.exists(paths[0]):
        raise ModelImportError(f"model file {source} not found")
    with fs.open(paths[0], "rb") as fh:
        raw = bytearray(fh.read())
    booster = xgb.Booster()
    try:
        booster.load_model(raw)
    except xgb.core.XGBoostError as exc:
        raise ModelImportError(
            f"{source} is not an XGBoost model file (save it with Booster.save_model('model.ubj')): {exc}"
        ) from exc
    return booster


def import_model(source: str, config: ModelConfig, reference: pd.DataFrame) -> TrainedModel:
    """The user's model as a TrainedModel for `config` (checked against it)."""
    booster = load_booster(source)
    cols = config.columns
    names = list(booster.feature_names or [])
    if names and names != list(cols.features):
        missing = [c for c in names if c not in cols.features]
        extra = [c for c in cols.features if c not in names]
        raise ModelImportError(
            f"model {source} takes features {names}; the config lists {list(cols.features)}"
            + (f" (the config lacks {missing})" if missing else "")
            + (f" (the model does not take {extra})" if extra else "")
            + ": set columns.features to the model's features, in its order"
        )
    if not names and booster.num_features() != len(cols.features):
        raise ModelImportError(
            f"model {source} takes {booster.num_features()} unnamed features; the config lists "
            f"{len(cols.features)}: save the model with its feature names (train on a DataFrame)"
        )
    booster.feature_names = list(cols.features)
    objective = _objective(booster)
    allowed = _OBJECTIVES.get(config.problem_type, ())
    if objective not in allowed:
        raise ModelImportError(
            f"model {source} has objective {objective!r}, which does not fit problem_type "
            f"{config.problem_type} (expected one of {list(allowed)}); fix problem_type in the config"
        )
    categories = _stored_categories(booster) or fit_categories(reference, cols)
    missing_cats = [c for c in cols.categorical if c not in categories]
    if missing_cats:
        categories |= fit_categories(reference, cols.model_copy(update={"categorical": missing_cats}))
    classes = None
    if config.classes is not None:
        conf = json.loads(booster.save_config())
        n = int(conf["learner"]["learner_model_param"].get("num_class", "0"))
        if n != len(config.classes):
            raise ModelImportError(
                f"model {source} predicts {n} classes; the config's columns.probability names "
                f"{len(config.classes)} ({config.classes}): list the model's classes in the order "
                "of its outputs (class 0 first)"
            )
        classes = class_labels(reference[cols.target], config.classes)
    return TrainedModel(
        booster=booster,
        features=list(cols.features),
        categories=categories,
        problem_type=config.problem_type,
        best_iteration=max(booster.num_boosted_rounds() - 1, 0),
        params={"objective": objective, "imported_from": source, "nthread": config.training.nthread},
        classes=classes,
    )


def _objective(booster: xgb.Booster) -> str:
    conf = json.loads(booster.save_config())
    return str(conf["learner"]["objective"]["name"])


def _stored_categories(booster: xgb.Booster) -> dict[str, list[str]]:
    """The categories XGBoost stored with the model (by feature), as strings."""
    try:
        stored = booster.get_categories(export_to_arrow=True).to_arrow()
    except (AttributeError, xgb.core.XGBoostError, ValueError):
        return {}
    out: dict[str, list[str]] = {}
    for name, values in stored or []:
        if values is not None:
            out[str(name)] = [str(v) for v in values.to_pylist()]
    return out


def _is_mlflow(source: str) -> bool:
    if source.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        return True
    path = Path(source)
    return "://" not in source and path.is_dir() and (path / "MLmodel").exists() or PurePosixPath(source).name == "MLmodel"
