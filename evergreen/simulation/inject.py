"""Controlled drift for a production stream: covariate, concept, prior shift and bad data.

Every function is pure and seeded: it takes a frame in time order and a start row
position, leaves the rows before `start` untouched, and returns a new frame together with
a `DriftDescription` of what was done. Resampling-based shifts keep each row's features
and label together (only id and timestamp stay in place), so the labels remain consistent
with the features and a model's realized metric can change for real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from evergreen.config import ColumnRoles, ProblemType
from evergreen.jsonable import plain as _plain

DriftKind = Literal["none", "covariate", "gradual_covariate", "unit", "concept", "prior", "bad_data"]
DRIFT_KINDS: tuple[str, ...] = (
    "none",
    "covariate",
    "gradual_covariate",
    "unit",
    "concept",
    "prior",
    "bad_data",
)
DRIFT_ALIASES = {"bad": "bad_data", "gradual": "gradual_covariate"}
CovariateMethod = Literal["resample", "additive"]
BadDataKind = Literal["nulls", "out_of_range", "strings", "unseen_category"]
BAD_DATA_KINDS: tuple[str, ...] = ("nulls", "out_of_range", "strings", "unseen_category")

# Share of the affected rows each bad-data kind corrupts unless told otherwise: a null flood
# is most of a column, a unit/scale bug hits a subset, a type change hits every row.
DEFAULT_BAD_FRACTION = {"nulls": 0.6, "out_of_range": 0.3, "strings": 1.0, "unseen_category": 0.3}
Z_CLIP = 3.0


class InjectionError(ValueError):
    """A drift request that cannot be applied; the message names the column or parameter."""


@dataclass(frozen=True)
class DriftDescription:
    """What an injection did: kind, first changed row, columns, parameters, measured effect."""

    kind: str
    start: int
    rows_affected: int
    features: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    effect: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        return _plain(asdict(self))


@dataclass(frozen=True)
class Injection:
    """The drifted frame and the description of the drift."""

    frame: pd.DataFrame
    description: DriftDescription


def shift_covariates(
    df: pd.DataFrame,
    columns: ColumnRoles,
    features: list[str],
    start: int = 0,
    *,
    method: CovariateMethod = "resample",
    strength: float = 1.0,
    seed: int = 0,
) -> Injection:
    """Shift the distribution of `features` from row `start` on.

    "resample" (default) redraws the rows from `start` on, with replacement, weighted by an
    exponential tilt of each feature: numeric exp(strength * z) (z clipped to +-3), which
    moves a roughly normal feature's mean by about `strength` standard deviations;
    categorical exp(strength * standardized frequency rank), which makes rare categories
    common. Labels travel with their rows. "additive" adds `strength` reference standard
    deviations to numeric features and redraws a share min(1, strength/2) of categorical
    values from the tilted distribution; labels are then no longer consistent with features.
    """
    start = _check_start(df, start)
    _check_features(df, columns, features)
    region = df.iloc[start:]
    if method == "resample":
        weights = np.ones(len(region))
        for name in features:
            weights *= _tilt(region[name], name in columns.categorical, strength)
        out = _resample_from(df, start, weights, columns, np.random.default_rng(seed))
    elif method == "additive":
        out = _add_shift(df, start, columns, features, strength, np.random.default_rng(seed))
    else:
        raise InjectionError(
            f"covariate method {method!r} is unknown; use 'resample' or 'additive'"
        )
    effect = {
        name: _summary_change(region[name], out[name].iloc[start:], name in columns.categorical)
        for name in features
    }
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="covariate",
            start=start,
            rows_affected=len(region),
            features=list(features),
            params={"method": method, "strength": strength, "seed": seed},
            effect=effect,
        ),
    )


def change_unit(
    df: pd.DataFrame, columns: ColumnRoles, feature: str, start: int = 0, *, factor: float = 0.001
) -> Injection:
    """An upstream unit change: numeric `feature` multiplied by `factor` from row `start` on
    (0.001: euros now sent in thousands). The outcome still follows the true quantity, so
    the serving model misreads every row, and a model retrained on rows from after the
    change reads them right: a drift retraining can fix."""
    start = _check_start(df, start)
    _check_features(df, columns, [feature])
    if feature in columns.categorical or not pd.api.types.is_numeric_dtype(df[feature]):
        raise InjectionError(f"unit change: feature {feature!r} is not numeric; pick a continuous feature")
    if factor <= 0:
        raise InjectionError(f"unit change: factor must be positive, got {factor}")
    out = df.copy()
    region = out[feature].iloc[start:]
    out[feature] = out[feature].astype(float)
    out.iloc[start:, out.columns.get_loc(feature)] = region.to_numpy(dtype=float) * factor
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="unit",
            start=start,
            rows_affected=len(out) - start,
            features=[feature],
            params={"factor": factor},
            effect={feature: _summary_change(df[feature].iloc[start:], out[feature].iloc[start:], False)},
        ),
    )


def shift_covariates_gradually(
    df: pd.DataFrame,
    columns: ColumnRoles,
    features: list[str],
    start: int = 0,
    *,
    ramp_rows: int | None = None,
    steps: int = 10,
    method: CovariateMethod = "resample",
    strength: float = 1.0,
    seed: int = 0,
) -> Injection:
    """Shift `features` a little more with every row from `start` on, reaching the full
    `strength` after `ramp_rows` rows (default: half the drifted rows) and keeping it after.

    "resample": the ramp is cut into `steps` equal segments, segment j is redrawn from its
    own rows with strength * (j + 1) / steps (an exponential tilt, as in `shift_covariates`),
    the rows after the ramp with the full strength; labels travel with their rows.
    "additive": numeric features move by strength * min(1, (k + 1) / ramp_rows) reference
    standard deviations at the k-th drifted row; categorical values are redrawn from the
    tilted distribution with a probability growing the same way up to min(1, strength / 2).
    """
    start = _check_start(df, start)
    _check_features(df, columns, features)
    n = len(df) - start
    ramp = n // 2 if ramp_rows is None else int(ramp_rows)
    if ramp < 1 or steps < 1:
        raise InjectionError(f"ramp_rows ({ramp_rows}) and steps ({steps}) must be at least 1")
    ramp = min(ramp, n)
    rng = np.random.default_rng(seed)
    if method == "resample":
        bounds = np.linspace(start, start + ramp, min(steps, ramp) + 1).round().astype(int)
        segments = [
            (int(a), int(b), strength * (j + 1) / (len(bounds) - 1))
            for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        if start + ramp < len(df):
            segments.append((start + ramp, len(df), strength))
        parts = [df.iloc[:start]]
        for a, b, s in segments:
            weights = np.ones(b - a)
            for name in features:
                weights *= _tilt(df[name].iloc[a:b], name in columns.categorical, s)
            parts.append(_resample_segment(df, a, b, weights, columns, rng))
        out = pd.concat(parts)
    elif method == "additive":
        ramp_share = np.minimum(1.0, (np.arange(n) + 1) / ramp)
        out = _add_shift(df, start, columns, features, strength, rng, ramp_share)
    else:
        raise InjectionError(
            f"covariate method {method!r} is unknown; use 'resample' or 'additive'"
        )
    region = df.iloc[start:]
    effect = {
        name: _summary_change(region[name], out[name].iloc[start:], name in columns.categorical)
        for name in features
    }
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="gradual_covariate",
            start=start,
            rows_affected=n,
            features=list(features),
            params={
                "method": method,
                "strength": strength,
                "ramp_rows": ramp,
                "steps": steps,
                "seed": seed,
            },
            effect=effect,
        ),
    )


def drift_concept(
    df: pd.DataFrame,
    columns: ColumnRoles,
    problem_type: ProblemType,
    start: int = 0,
    *,
    feature: str | None = None,
    quantile: float = 0.8,
    flip_probability: float = 0.8,
    target_shift: float = 1.0,
    seed: int = 0,
) -> Injection:
    """Change the label relationship from row `start` on; features are left as they are.

    The affected region is the rows whose `feature` (default: the first continuous
    feature) lies above its `quantile` in the drifted part (categorical: the most frequent
    category). Binary: labels there flip with `flip_probability`, so above 0.5 the rule is
    inverted (a retrained model can learn it; the old one gets worse). Regression: the
    target there moves by `target_shift` standard deviations.
    """
    start = _check_start(df, start)
    _require(df, [columns.target], "stream frame")
    feature = feature or (columns.continuous[0] if columns.continuous else columns.features[0])
    _check_features(df, columns, [feature])
    region = df.iloc[start:]
    in_region = _concept_region(region[feature], feature in columns.categorical, quantile)
    rng = np.random.default_rng(seed)
    target = region[columns.target]
    y = pd.to_numeric(target).to_numpy(dtype=float)
    if problem_type == "binary_classification":
        flip = in_region & (rng.random(len(region)) < flip_probability) & ~np.isnan(y)
        new_y = np.where(flip, 1.0 - y, y)
        effect: dict[str, Any] = {
            "labels_flipped": int(flip.sum()),
            "rows_in_region": int(in_region.sum()),
        }
        changed = int(flip.sum())
    else:
        shift = target_shift * float(np.nanstd(y))
        new_y = np.where(in_region, y + shift, y)
        effect = {"target_shift": shift, "rows_in_region": int(in_region.sum())}
        changed = int(in_region.sum())
    out = df.copy()
    col = out.columns.get_loc(columns.target)
    values = pd.Series(new_y, index=region.index)
    if pd.api.types.is_integer_dtype(target.dtype) or pd.api.types.is_bool_dtype(target.dtype):
        values = values.astype(target.dtype)
    out.iloc[start:, col] = values.to_numpy()
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="concept",
            start=start,
            rows_affected=changed,
            features=[feature],
            params={
                "quantile": quantile,
                "flip_probability": flip_probability,
                "target_shift": target_shift,
                "seed": seed,
            },
            effect=effect,
        ),
    )


def shift_prior(
    df: pd.DataFrame,
    columns: ColumnRoles,
    problem_type: ProblemType,
    start: int = 0,
    *,
    target_rate: float | None = None,
    rate_change: float = -0.25,
    strength: float = 0.5,
    seed: int = 0,
) -> Injection:
    """Resample the rows from `start` on to change the label distribution.

    Binary: the positive rate becomes `target_rate` (default: the current rate plus
    `rate_change`, kept within [0.05, 0.95]). Regression: the target mean moves by about
    `strength` standard deviations (exponential tilt). Features travel with their labels.
    """
    start = _check_start(df, start)
    _require(df, [columns.target], "stream frame")
    region = df.iloc[start:]
    y = pd.to_numeric(region[columns.target]).to_numpy(dtype=float)
    if np.isnan(y).all():
        raise InjectionError(f"target column {columns.target!r} has no values from row {start} on")
    if problem_type == "binary_classification":
        base = float(np.nanmean(y))
        goal = (
            target_rate
            if target_rate is not None
            else float(np.clip(base + rate_change, 0.05, 0.95))
        )
        if not 0 < goal < 1 or not 0 < base < 1:
            raise InjectionError(
                f"cannot move positive rate {base:.3f} of {columns.target!r} to {goal}"
            )
        weights = np.where(y == 1, goal / base, (1 - goal) / (1 - base))
        weights = np.where(np.isnan(y), 1.0, weights)
    else:
        weights = _tilt(region[columns.target], False, strength)
    out = _resample_from(df, start, weights, columns, np.random.default_rng(seed))
    after = pd.to_numeric(out[columns.target].iloc[start:]).to_numpy(dtype=float)
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="prior",
            start=start,
            rows_affected=len(region),
            features=[],
            params={
                "target_rate": target_rate,
                "rate_change": rate_change,
                "strength": strength,
                "seed": seed,
            },
            effect={
                "target_mean_before": float(np.nanmean(y)),
                "target_mean_after": float(np.nanmean(after)),
            },
        ),
    )


def corrupt_column(
    df: pd.DataFrame,
    column: str,
    start: int = 0,
    *,
    kind: BadDataKind = "nulls",
    fraction: float | None = None,
    seed: int = 0,
) -> Injection:
    """Corrupt a share of `column` from row `start` on, the way broken pipelines do.

    kinds: "nulls" (values become missing), "out_of_range" (numbers far above the column's
    range), "strings" (numbers arrive as text), "unseen_category" (labels never seen in
    training). `fraction` defaults per kind (see DEFAULT_BAD_FRACTION).
    """
    start = _check_start(df, start)
    _require(df, [column], "stream frame")
    if kind not in BAD_DATA_KINDS:
        raise InjectionError(f"bad-data kind {kind!r} is unknown; use one of {BAD_DATA_KINDS}")
    share = DEFAULT_BAD_FRACTION[kind] if fraction is None else fraction
    if not 0 <= share <= 1:
        raise InjectionError(f"fraction must be within [0, 1]; got {share}")
    col = df[column]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if kind in ("out_of_range", "strings") and not numeric:
        raise InjectionError(
            f"bad-data kind {kind!r} needs a numeric column; {column!r} has dtype {col.dtype}"
        )
    if kind == "unseen_category" and numeric:
        raise InjectionError(
            f"bad-data kind 'unseen_category' needs a categorical column; {column!r} is numeric"
        )
    rng = np.random.default_rng(seed)
    n = len(df) - start
    hit = np.zeros(len(df), dtype=bool)
    hit[start:] = rng.random(n) < share
    values = col.astype(object).to_numpy(copy=True)
    if kind == "nulls":
        values[hit] = None
    elif kind == "out_of_range":
        lo, hi = (
            float(np.nanmin(col.to_numpy(dtype=float))),
            float(np.nanmax(col.to_numpy(dtype=float))),
        )
        span = max(hi - lo, abs(hi), 1.0)
        values[hit] = hi + span * rng.uniform(2.0, 10.0, size=int(hit.sum()))
    elif kind == "strings":
        values[hit] = [None if pd.isna(v) else str(v) for v in values[hit]]
    else:
        values[hit] = [f"{column}__unseen_{k}" for k in rng.integers(0, 3, size=int(hit.sum()))]
    out = df.copy()
    out[column] = _typed_like(values, col, kind)
    return Injection(
        frame=out,
        description=DriftDescription(
            kind="bad_data",
            start=start,
            rows_affected=int(hit.sum()),
            features=[column],
            params={"bad_data_kind": kind, "fraction": share, "seed": seed},
            effect={"cells_corrupted": int(hit.sum())},
        ),
    )


def inject_drift(
    df: pd.DataFrame,
    columns: ColumnRoles,
    problem_type: ProblemType,
    kind: DriftKind,
    start: int = 0,
    *,
    features: list[str] | None = None,
    seed: int = 0,
    **params: Any,
) -> Injection:
    """Apply one drift kind by name ("none", "covariate", "gradual_covariate", "unit",
    "concept", "prior", "bad_data"; aliases "gradual" and "bad").

    `features` chooses the shifted features (covariate), the region feature (concept,
    first entry) or the corrupted column (bad_data, first entry; default: the first
    continuous feature, or the first categorical one for "unseen_category");
    `bad_data_kind` picks the corruption; other keyword arguments go to the kind's function.
    """
    kind = DRIFT_ALIASES.get(kind, kind)  # type: ignore[assignment]
    if kind == "none":
        return Injection(
            frame=df.copy(),
            description=DriftDescription(
                kind="none", start=_check_start(df, start), rows_affected=0
            ),
        )
    if kind == "covariate":
        chosen = features or columns.features[:2]
        return shift_covariates(df, columns, chosen, start, seed=seed, **params)
    if kind == "gradual_covariate":
        chosen = features or columns.features[:2]
        return shift_covariates_gradually(df, columns, chosen, start, seed=seed, **params)
    if kind == "unit":
        feature = (features or columns.continuous or columns.features)[0]
        return change_unit(df, columns, feature, start, **params)
    if kind == "concept":
        return drift_concept(
            df,
            columns,
            problem_type,
            start,
            feature=features[0] if features else None,
            seed=seed,
            **params,
        )
    if kind == "prior":
        return shift_prior(df, columns, problem_type, start, seed=seed, **params)
    if kind == "bad_data":
        bad_kind = params.pop("bad_data_kind", "nulls")
        default = columns.categorical if bad_kind == "unseen_category" else columns.continuous
        column = (features or default or columns.features)[0]
        return corrupt_column(df, column, start, kind=bad_kind, seed=seed, **params)
    raise InjectionError(f"drift kind {kind!r} is unknown; use one of {DRIFT_KINDS}")


def _resample_from(
    df: pd.DataFrame,
    start: int,
    weights: np.ndarray,
    columns: ColumnRoles,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Rows from `start` on redrawn by weight; id and timestamp stay where they were.

    Drawn positions are sorted so the drifted part keeps the source's slow trends in time.
    """
    if len(df) == start:
        return df.copy()
    return pd.concat([df.iloc[:start], _resample_segment(df, start, len(df), weights, columns, rng)])


def _resample_segment(
    df: pd.DataFrame,
    begin: int,
    end: int,
    weights: np.ndarray,
    columns: ColumnRoles,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Rows begin..end-1 redrawn from themselves by weight; id and timestamp stay in place."""
    n = end - begin
    p = np.asarray(weights, dtype=float)
    if not np.isfinite(p).all() or p.sum() <= 0:
        raise InjectionError("resampling weights must be finite and not all zero")
    picks = np.sort(rng.choice(n, size=n, replace=True, p=p / p.sum())) + begin
    region = df.iloc[picks].copy()
    region.index = df.index[begin:end]
    for name in (columns.id, columns.timestamp):
        if name in df.columns:
            region[name] = df[name].iloc[begin:end].to_numpy()
    return region


def _add_shift(
    df: pd.DataFrame,
    start: int,
    columns: ColumnRoles,
    features: list[str],
    strength: float,
    rng: np.random.Generator,
    ramp_share: np.ndarray | None = None,
) -> pd.DataFrame:
    """Additive shift; `ramp_share` (one value in [0, 1] per drifted row) scales it per row."""
    out = df.copy()
    reference = df.iloc[:start] if start > 0 else df
    share = np.ones(len(df) - start) if ramp_share is None else ramp_share
    for name in features:
        if name in columns.categorical:
            region = df[name].iloc[start:]
            weights = _category_weights(region, strength)
            cats = list(weights)
            p = np.array([weights[c] * (region == c).mean() for c in cats])
            replace = rng.random(len(region)) < min(1.0, strength / 2) * share
            draws = rng.choice(len(cats), size=len(region), p=p / p.sum())
            new = region.astype(object).to_numpy(copy=True)
            new[replace] = [cats[i] for i in draws[replace]]
            out[name] = _typed_like(
                np.concatenate([df[name].iloc[:start].astype(object).to_numpy(), new]), df[name], ""
            )
        else:
            std = float(pd.to_numeric(reference[name]).std())
            shifted = pd.to_numeric(df[name]).astype(float)
            shifted.iloc[start:] += strength * std * share
            out[name] = shifted
    return out


def _tilt(values: pd.Series, categorical: bool, strength: float) -> np.ndarray:
    if categorical:
        weights = _category_weights(values, strength)
        return values.map(weights).fillna(1.0).to_numpy(dtype=float)
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    std = float(np.nanstd(x))
    z = np.zeros_like(x) if std == 0 else np.clip((x - np.nanmean(x)) / std, -Z_CLIP, Z_CLIP)
    return np.exp(strength * np.nan_to_num(z, nan=0.0))


def _category_weights(values: pd.Series, strength: float) -> dict[Any, float]:
    """exp(strength * standardized rank), rank 0 = most frequent: rare categories gain."""
    counts = values.value_counts(dropna=True)
    ordered = sorted(counts.index, key=lambda c: (-counts[c], str(c)))
    ranks = np.arange(len(ordered), dtype=float)
    z = (ranks - ranks.mean()) / ranks.std() if len(ordered) > 1 else ranks
    return {c: float(np.exp(strength * zi)) for c, zi in zip(ordered, z, strict=True)}


def _concept_region(values: pd.Series, categorical: bool, quantile: float) -> np.ndarray:
    if categorical:
        top = values.value_counts(dropna=True).index[0]
        return (values == top).to_numpy(dtype=bool)
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return np.nan_to_num(x, nan=-np.inf) > np.nanquantile(x, quantile)


def _summary_change(before: pd.Series, after: pd.Series, categorical: bool) -> dict[str, Any]:
    if categorical:
        return {
            "shares_before": before.astype(str).value_counts(normalize=True).round(4).to_dict(),
            "shares_after": after.astype(str).value_counts(normalize=True).round(4).to_dict(),
        }
    b, a = pd.to_numeric(before, errors="coerce"), pd.to_numeric(after, errors="coerce")
    std = float(b.std()) or 1.0
    return {
        "mean_before": float(b.mean()),
        "mean_after": float(a.mean()),
        "shift_in_std": float((a.mean() - b.mean()) / std),
    }


def _typed_like(values: np.ndarray, original: pd.Series, kind: str) -> pd.Series:
    """Keep the original dtype where the new values allow it (nulls in ints make floats)."""
    series = pd.Series(values, index=original.index)
    if kind == "strings":
        return series  # mixed numbers and text: the point of this corruption
    if pd.api.types.is_bool_dtype(original.dtype):
        return series if series.isna().any() else series.astype(bool)
    if pd.api.types.is_numeric_dtype(original.dtype):
        return pd.to_numeric(series)
    if pd.api.types.is_string_dtype(original.dtype):
        return series.astype(original.dtype)
    return series


def _check_start(df: pd.DataFrame, start: int) -> int:
    if not 0 <= int(start) <= len(df):
        raise InjectionError(f"start row {start} is outside the frame of {len(df)} rows")
    return int(start)


def _check_features(df: pd.DataFrame, columns: ColumnRoles, features: list[str]) -> None:
    unknown = [f for f in features if f not in columns.features]
    if unknown:
        raise InjectionError(
            f"{unknown} are not features of the model; choose from {columns.features}"
        )
    _require(df, features, "stream frame")


def _require(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise InjectionError(f"{what} lacks columns {missing}")


