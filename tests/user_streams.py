"""NannyML's shipped tables cut into "a user's own data": a reference table, a folder of
time-ordered batch files and a folder of delayed label files, as a user would hand them to
`evergreen init`. Nothing here is Evergreen code: the streams are written the way a user's
pipeline might write them (Parquet or CSV, any cadence), so the onboarding tests exercise
Evergreen on data it never generated.

Only titanic_*, regression_synthetic_*, mc_* and synthetic_car_loan_* tables are used; the
employment and California-housing tables are kept for judging the product."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

WEEK = pd.Timedelta(days=7)


def nannyml_table(name: str) -> pd.DataFrame:
    """One CSV that ships inside nannyml, read without importing nannyml (~18 s)."""
    spec = importlib.util.find_spec("nannyml")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    assert "employment" not in name and "california" not in name, "kept for judging the product"
    return pd.read_csv(path)


@dataclass(frozen=True)
class UserStream:
    reference: Path
    batches: Path
    labels: Path
    target: str
    batch_days: list[str]


def write_user_stream(
    root: Path,
    reference: pd.DataFrame,
    analysis: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    id_column: str,
    target: str,
    timestamp: str = "timestamp",
    start: str = "2024-01-01",
    every: pd.Timedelta = WEEK,
    rows_per_batch: int = 500,
    label_delay_batches: int = 1,
    fmt: str = "parquet",
    max_batches: int | None = None,
    drop: tuple[str, ...] = (),
) -> UserStream:
    """Write `reference` (labelled) and `analysis` cut into batches, one per period of
    `every`, each batch's labels delivered `label_delay_batches` periods after the batch's
    period ends, in a file named by its delivery date. A table with its own `timestamp`
    column is cut by time (rows keep their times; `start` is then ignored); one without gets
    one: `rows_per_batch` rows per period, evenly spaced, the reference before the first.
    Files are named by date (`%Y-%m-%d`, or `%Y-%m-%dT%H%M` below a day's cadence)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "batches").mkdir(exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    ref = reference.drop(columns=[c for c in drop if c in reference.columns]).copy()
    ana = analysis.drop(columns=[c for c in drop if c in analysis.columns]).reset_index(drop=True).copy()
    if timestamp in ana.columns:
        ana[timestamp] = pd.to_datetime(ana[timestamp])
        first = ana[timestamp].min().floor("D") if every >= pd.Timedelta(days=1) else ana[timestamp].min().floor("h")
        period = ((ana[timestamp] - first) // every).astype(int)
    else:
        first = pd.Timestamp(start)
        period = pd.Series(np.arange(len(ana)) // rows_per_batch)
        period = period[period < len(ana) // rows_per_batch]
        ana = ana.iloc[: len(period)]
        offsets = (np.arange(len(ana)) % rows_per_batch) * (every / rows_per_batch)
        ana[timestamp] = first + period.to_numpy() * every + offsets
    if timestamp not in ref.columns:
        span = every * max(1, len(ref) // rows_per_batch)
        ref[timestamp] = first - span + (np.arange(len(ref)) * (span / max(len(ref), 1)))
    ref_path = root / f"reference.{fmt}"
    _write(ref, ref_path)

    labels = targets.set_index(id_column)[target]
    fmt_name = "%Y-%m-%d" if every >= pd.Timedelta(days=1) else "%Y-%m-%dT%H%M"
    days: list[str] = []
    for i in sorted(period.unique()):
        if max_batches is not None and len(days) >= max_batches:
            break
        batch = ana[period == i]
        begin = first + int(i) * every
        day = begin.strftime(fmt_name)
        _write(batch.drop(columns=[target], errors="ignore"), root / "batches" / f"{day}.{fmt}")
        delivered = (begin + (label_delay_batches + 1) * every).strftime(fmt_name)
        rows = pd.DataFrame({id_column: batch[id_column].to_numpy(), target: labels.reindex(batch[id_column]).to_numpy()})
        rows = rows.dropna(subset=[target])
        out = root / "labels" / f"{delivered}.{fmt}"
        if out.exists():  # two batches' labels delivered on one day: one file
            rows = pd.concat([_read(out), rows], ignore_index=True)
        _write(rows, out)
        days.append(day)
    return UserStream(ref_path, root / "batches", root / "labels", target, days)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def titanic(root: Path, **kw) -> UserStream:  # noqa: ANN003
    """Binary: who survived (891 labelled reference rows, 418 production rows)."""
    kw.setdefault("rows_per_batch", 60)
    return write_user_stream(
        root, nannyml_table("titanic_reference.csv"), nannyml_table("titanic_analysis.csv"),
        nannyml_table("titanic_target.csv"), id_column="PassengerId", target="Survived", **kw,
    )


def regression(root: Path, **kw) -> UserStream:  # noqa: ANN003
    """Regression: used-car prices, served predictions in the batches (y_pred)."""
    return write_user_stream(
        root, nannyml_table("regression_synthetic_reference.csv"), nannyml_table("regression_synthetic_analysis.csv"),
        nannyml_table("regression_synthetic_analysis_targets.csv"), id_column="id", target="y_true", **kw,
    )


def multiclass(root: Path, **kw) -> UserStream:  # noqa: ANN003
    """Multiclass: credit-card product, per-class probabilities in the batches."""
    return write_user_stream(
        root, nannyml_table("mc_reference.csv"), nannyml_table("mc_analysis.csv"),
        nannyml_table("mc_analysis_gt.csv"), id_column="id", target="y_true", **kw,
    )


def car_loan_dq(root: Path, **kw) -> UserStream:  # noqa: ANN003
    """Binary with data-quality faults (missing values) in reference and production."""
    analysis = nannyml_table("synthetic_car_loan_dq_analysis.csv")
    targets = nannyml_table("synthetic_car_loan_analysis_target.csv")
    return write_user_stream(
        root, nannyml_table("synthetic_car_loan_dq_reference.csv"), analysis, targets,
        id_column="id", target="repaid", **kw,
    )
