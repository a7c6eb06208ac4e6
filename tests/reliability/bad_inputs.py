"""A catalogue of bad production batches and bad label files, built from a good one.

Each `BadInput` says what is tried (the RELIABILITY.md table reads these words), which file
it lands in (a batch the monitor reads, or a labels file the retrain's window joins), what
the system must do (reject it, or accept it and say so: a `finding` is a distribution
finding the result must report for the first column) and the columns and expectations
the run's message must name. `write_bad_input` writes the bad file from a good frame; every
random choice is seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from evergreen.adapters.io import write_table
from evergreen.config import ModelConfig

READABLE = "expect_file_to_be_readable"
EXISTS = "expect_column_to_exist"
TYPE = "expect_column_values_to_be_in_type_list"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
UNIQUE = "expect_column_values_to_be_unique"
MAX_BETWEEN = "expect_column_max_to_be_between"
NOT_CONSTANT = "expect_column_unique_value_count_to_be_between"
FINITE = "expect_column_values_to_not_be_in_set"
COLUMNS_MATCH = "expect_table_columns_to_match_set"

Writer = Callable[[pd.DataFrame, str, ModelConfig], None]


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input and what the system must do with it."""

    name: str
    tried: str
    write: Writer
    kind: Literal["batch", "labels"] = "batch"
    outcome: Literal["rejected", "accepted"] = "rejected"
    finding: Literal["range", "categories"] | None = None
    columns: tuple[str, ...] = ()
    expectations: tuple[str, ...] = ()
    suffix: str = ".parquet"
    in_place: bool = False  # the bad file replaces the good one instead of arriving next to it


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rows(frame: pd.DataFrame, share: float, seed: int = 7) -> np.ndarray:
    """A seeded boolean mask of `share` of the rows."""
    mask = np.zeros(len(frame), dtype=bool)
    mask[_rng(seed).choice(len(frame), size=int(len(frame) * share), replace=False)] = True
    return mask


def _parquet(frame: pd.DataFrame, path: str) -> None:
    write_table(frame, path)


def _changed(column: str, change: Callable[[pd.Series], pd.Series]) -> Writer:
    def write(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
        _parquet(good.assign(**{column: change(good[column])}), path)

    return write


def _missing_column(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good.drop(columns=["car_value"]), path)


def _extra_column(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good.assign(promo_code=_rng().choice(["A", "B", "C"], size=len(good))), path)


def _renamed_column(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good.rename(columns={"car_value": "carValue"}), path)


def _null_flood(s: pd.Series) -> pd.Series:
    return s.mask(_rows(s.to_frame(), 0.6))


def _out_of_range(s: pd.Series) -> pd.Series:
    # A unit bug on part of the traffic: values in cents instead of currency units.
    return s.mask(_rows(s.to_frame(), 0.3), s * 1000)


def _negative(s: pd.Series) -> pd.Series:
    # A sign bug on part of the traffic; the stream's config declares car_value >= 0.
    return s.mask(_rows(s.to_frame(), 0.05), -s)


def _unseen_categories(s: pd.Series) -> pd.Series:
    return s.mask(_rows(s.to_frame(), 0.4), "unknown-band")


def _infinities(s: pd.Series) -> pd.Series:
    return s.mask(_rows(s.to_frame(), 0.02), np.inf)


def _empty_file(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"")


def _zero_rows(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good.iloc[:0], path)


def _duplicated_ids(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    ids = good[cfg.columns.id].to_numpy().copy()
    dupes = _rows(good, 0.1)
    ids[dupes] = ids[np.flatnonzero(~dupes)[: dupes.sum()]]
    _parquet(good.assign(**{cfg.columns.id: ids}), path)


def _shuffled_rows(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good.sample(frac=1.0, random_state=7).reset_index(drop=True), path)


def _future_timestamps(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    ts = cfg.columns.timestamp
    _parquet(good.assign(**{ts: good[ts] + pd.DateOffset(years=80)}), path)


def _truncated_parquet(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good, path)
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 2])  # an upload cut off half-way


def _garbage_parquet(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    _parquet(good, path)
    raw = bytearray(Path(path).read_bytes())
    # The footer (schema and row-group metadata) overwritten by a bad disk or a bad copy.
    tail = len(raw) - 8
    raw[tail - 200 : tail] = _rng().integers(0, 256, size=200, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(raw))


def _csv_wrong_delimiter(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    good.to_csv(path, sep=";", index=False)


def _non_utf8_csv(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    # A producer writing Latin-1: one band label carries an accented character.
    frame = good.assign(salary_range=good["salary_range"].where(~_rows(good, 0.05), "40K – 60K é"))
    Path(path).write_bytes(frame.to_csv(index=False).encode("latin-1", errors="replace"))


def _oversized(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    limit = cfg.data.max_batch_rows
    copies = -(-20 * limit // len(good))  # twenty times the configured limit
    ids = good[cfg.columns.id].to_numpy()
    frame = pd.concat([good] * copies, ignore_index=True)
    frame[cfg.columns.id] = np.arange(len(frame)) + int(ids.max()) + 1
    _parquet(frame, path)


def _labels_unknown_ids(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    # Labels of another system (or ids off by an offset): no batch ever served these ids.
    _parquet(good.assign(**{cfg.columns.id: good[cfg.columns.id] + 10_000_000}), path)


def _labels_impossible(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    target = cfg.columns.target
    bad = _rows(good, 0.2)
    _parquet(good.assign(**{target: np.where(bad, 2, good[target])}), path)


def _labels_twice(good: pd.DataFrame, path: str, cfg: ModelConfig) -> None:
    # A day's labels delivered again under the next day's name, some of them changed.
    target = cfg.columns.target
    _parquet(good.assign(**{target: 1 - good[target]}), path)


CATALOGUE: list[BadInput] = [
    BadInput("missing_column", "a feature column (car_value) is missing", _missing_column,
             columns=("car_value",), expectations=(EXISTS,)),
    BadInput("extra_column", "an extra column (promo_code) the reference does not have",
             _extra_column, outcome="accepted", columns=("promo_code",),
             expectations=(COLUMNS_MATCH,)),
    BadInput("renamed_column", "a feature renamed upstream (car_value -> carValue)",
             _renamed_column, columns=("car_value", "carValue"), expectations=(EXISTS,)),
    BadInput("type_change", "numbers arrive as strings (car_value '12345.0')",
             _changed("car_value", lambda s: s.astype(str)), columns=("car_value",),
             expectations=(TYPE,)),
    BadInput("all_null_column", "every value of a feature is null (debt_to_income_ratio)",
             _changed("debt_to_income_ratio", lambda s: s * np.nan),
             columns=("debt_to_income_ratio",), expectations=(NOT_NULL,)),
    BadInput("null_flood", "60% of one feature is null (driver_tenure)",
             _changed("driver_tenure", _null_flood), columns=("driver_tenure",),
             expectations=(NOT_NULL,)),
    BadInput("out_of_range", "30% of car_value multiplied by 1000 (a unit bug)",
             _changed("car_value", _out_of_range), outcome="accepted", finding="range",
             columns=("car_value",), expectations=(BETWEEN,)),
    BadInput("impossible_value", "5% of car_value negative (declared: validation.limits car_value min 0)",
             _changed("car_value", _negative), columns=("car_value",), expectations=(BETWEEN,)),
    BadInput("unseen_category_flood", "40% of salary_range is a category never seen",
             _changed("salary_range", _unseen_categories), outcome="accepted", finding="categories",
             columns=("salary_range",), expectations=(IN_SET,)),
    BadInput("empty_file", "a 0-byte batch file", _empty_file, expectations=(READABLE,)),
    BadInput("zero_rows", "a Parquet file with the right schema and no rows", _zero_rows,
             expectations=(ROW_COUNT,)),
    BadInput("duplicated_ids", "10% of the rows repeat another row's id", _duplicated_ids,
             columns=("id",), expectations=(UNIQUE,)),
    BadInput("timestamps_out_of_order", "rows shuffled: timestamps not in order",
             _shuffled_rows, outcome="accepted"),
    BadInput("timestamps_in_future", "timestamps 80 years in the future",
             _future_timestamps, columns=("timestamp",), expectations=(MAX_BETWEEN,)),
    BadInput("constant_column", "a feature that varies in the reference is constant (loan_length)",
             _changed("loan_length", lambda s: s * 0 + 42.0), columns=("loan_length",),
             expectations=(NOT_CONSTANT,)),
    BadInput("infinities", "2% of debt_to_income_ratio is +inf",
             _changed("debt_to_income_ratio", _infinities), columns=("debt_to_income_ratio",),
             expectations=(FINITE,)),
    BadInput("truncated_parquet", "a Parquet file cut off half-way", _truncated_parquet,
             expectations=(READABLE,)),
    BadInput("corrupted_parquet", "a Parquet file whose footer is overwritten with noise",
             _garbage_parquet, expectations=(READABLE,)),
    BadInput("csv_wrong_delimiter", "a CSV batch delimited with ';'", _csv_wrong_delimiter,
             expectations=(READABLE,), suffix=".csv"),
    BadInput("non_utf8_text", "a CSV batch written in Latin-1, not UTF-8", _non_utf8_csv,
             columns=("salary_range",), expectations=(READABLE,), suffix=".csv"),
    BadInput("oversized_batch", "a batch twenty times data.max_batch_rows", _oversized,
             expectations=(ROW_COUNT,)),
    BadInput("labels_unknown_ids", "a labels file whose ids no batch ever served",
             _labels_unknown_ids, kind="labels", columns=("id",), expectations=(IN_SET,)),
    BadInput("labels_impossible_values", "a labels file with target 2 in a binary problem",
             _labels_impossible, kind="labels", columns=("repaid",), expectations=(IN_SET,),
             in_place=True),
    BadInput("labels_truncated", "a labels file cut off half-way (the window cannot read it either)",
             _truncated_parquet, kind="labels", expectations=(READABLE,)),
    BadInput("labels_delivered_twice", "a day's labels delivered again (flipped) in a later file",
             _labels_twice, kind="labels", columns=("id",), expectations=(UNIQUE,)),
]

BY_NAME = {case.name: case for case in CATALOGUE}


def write_bad_input(case: BadInput, good: pd.DataFrame, path: str, config: ModelConfig) -> str:
    """Write the bad file of `case` at `path` from the good frame; returns the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    case.write(good, path, config)
    return path
