"""Request bodies of MLflow's scoring protocol, parsed and checked against the model's features.

Parsing is pure: bytes in, a columnar `RequestTable` out, or a `PayloadError` that carries the
HTTP status and names the field, column and row that is wrong. Nothing here knows about HTTP
frameworks, so every rule is unit-testable.

Accepted bodies (JSON, like `mlflow models serve`):
    {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
    {"dataframe_records": [{...}, ...]}
    {"instances": [{...}, ...]}   or   {"inputs": [{...}, ...]}
    {"inputs": {"col": [...], ...}}   (columnar) or {"inputs": {"col": value, ...}} (one row)
and `text/csv` bodies with a header row.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

import numpy as np
import pandas as pd

from evergreen.adapters.column_batch import ColumnBatch
from evergreen.apps.serving import jsoncodec
from evergreen.decisions.routing import routing_key

DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS = (
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
)
FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
# MLflow lets clients pass inference params next to the data; a Booster takes none.
IGNORED_KEYS = frozenset({"params"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)

FeatureKind = Literal["numeric", "string", "boolean", "integer"]


class PayloadError(ValueError):
    """A request the service cannot score; `status` is the HTTP status to answer with."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.row = row

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body; `error_code` and `message` as MLflow's scoring server sends."""
        code = {413: "PAYLOAD_TOO_LARGE", 422: "INVALID_PARAMETER_VALUE"}.get(
            self.status, "BAD_REQUEST"
        )
        body: dict[str, Any] = {"error_code": code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.row is not None:
            body["row"] = self.row
        return body


@dataclass(frozen=True)
class RequestLimits:
    """Largest request the service scores; larger ones get 413."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 10_000


@dataclass(frozen=True)
class RequestTable:
    """A request's rows as columns of plain Python values (column order as sent)."""

    columns: dict[str, list[Any]]
    n_rows: int
    format: str


@dataclass(frozen=True)
class FeatureSpec:
    """One model input and how its values are checked and stored.

    numeric: numbers or null. Categorical features take the kind of their training
    categories, so logged batches keep the dtype the reference data had:
    boolean ({"False", "True"}), integer (integer codes), string (anything else).
    """

    name: str
    kind: FeatureKind
    categories: tuple[str, ...] = field(default=())


def feature_specs(features: Sequence[str], categories: dict[str, list[str]]) -> list[FeatureSpec]:
    """Specs of a model's features from its training-time category lists."""
    return [
        FeatureSpec(name, _category_kind(categories[name]), tuple(categories[name]))
        if name in categories
        else FeatureSpec(name, "numeric")
        for name in features
    ]


def merge_specs(*groups: Sequence[FeatureSpec]) -> list[FeatureSpec]:
    """Union of several models' specs, first model first (its kind wins on a conflict)."""
    merged: dict[str, FeatureSpec] = {}
    for specs in groups:
        for spec in specs:
            merged.setdefault(spec.name, spec)
    return list(merged.values())


def _category_kind(values: list[str]) -> FeatureKind:
    if values and set(values) <= {"True", "False"}:
        return "boolean"
    if values and all(_is_int_text(v) for v in values):
        return "integer"
    return "string"


def _is_int_text(text: str) -> bool:
    body = text[1:] if text[:1] == "-" else text
    return body.isdecimal()  # not isdigit(): int() rejects superscripts such as "²"


# --------------------------------------------------------------------------------- parsing


def parse_body(body: bytes, content_type: str | None, limits: RequestLimits) -> RequestTable:
    """Parse a scoring request body (JSON or CSV) into columns; never raises anything but
    PayloadError for bad input."""
    if len(body) > limits.max_body_bytes:
        raise PayloadError(
            f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes} bytes. "
            "Send fewer rows per request.",
            status=413,
        )
    if not body.strip():
        raise PayloadError("request body is empty; send one of " + _formats_hint())
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media == "text/csv":
        table = _parse_csv(body)
    elif media in ("application/json", "") or media.endswith("+json"):
        table = _parse_json(body)
    else:
        raise PayloadError(
            f"unsupported Content-Type {media!r}; use application/json or text/csv", status=415
        )
    if table.n_rows == 0:
        raise PayloadError(f"{table.format}: no rows to score (empty data)", field=table.format)
    if table.n_rows > limits.max_rows:
        raise PayloadError(
            f"request has {table.n_rows} rows; the limit is {limits.max_rows} rows per request. "
            "Split it into smaller requests.",
            status=413,
        )
    return table


def _formats_hint() -> str:
    return (
        '{"dataframe_split": {"columns": [...], "data": [[...]]}}, '
        '{"dataframe_records": [{...}]}, {"instances": [{...}]} or {"inputs": ...}'
    )


def _parse_json(body: bytes) -> RequestTable:
    try:
        payload = jsoncodec.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise PayloadError(f"request body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body) and _holds_lone_surrogate(payload):
        raise PayloadError(
            "request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff) in a string; "
            "send valid Unicode text"
        )
    if not isinstance(payload, dict):
        raise PayloadError(
            f"request body must be a JSON object with one of {list(FORMATS)}; "
            f"got a JSON {type(payload).__name__}"
        )
    found = [k for k in FORMATS if k in payload]
    if len(found) != 1:
        others = sorted(k for k in payload if k not in IGNORED_KEYS)
        what = "none of them" if not found else f"several: {found}"
        raise PayloadError(
            f"request body must hold exactly one of {list(FORMATS)} ({what}; keys sent: {others}). "
            f"Examples: {_formats_hint()}",
            field=found[1] if len(found) > 1 else None,
        )
    key = found[0]
    value = payload[key]
    if key == DF_SPLIT:
        return _from_split(value)
    if key == DF_RECORDS:
        return _from_records(value, key)
    if isinstance(value, dict):
        return _from_column_dict(value, key)
    return _from_records(value, key)


# JSON's \uXXXX escapes can spell half of a UTF-16 pair, which Python's json reads into a
# string no UTF-8 writer accepts (the prediction log's Parquet files among them): such a
# request is refused before any row is scored or logged. Valid pairs (emoji) are fine.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _holds_lone_surrogate(payload: Any) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _from_split(value: Any) -> RequestTable:
    if not isinstance(value, dict):
        raise PayloadError(
            f'{DF_SPLIT} must be an object {{"columns": [...], "data": [[...]]}}; '
            f"got a JSON {type(value).__name__}",
            field=DF_SPLIT,
        )
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise PayloadError(
            f"{DF_SPLIT}.columns must be a list of column names (strings); got {columns!r:.200}",
            field=f"{DF_SPLIT}.columns",
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise PayloadError(
            f"{DF_SPLIT}.columns lists {dupes} more than once", field=f"{DF_SPLIT}.columns"
        )
    if not isinstance(data, list):
        raise PayloadError(
            f"{DF_SPLIT}.data must be a list of rows (lists of values); got {type(data).__name__}",
            field=f"{DF_SPLIT}.data",
        )
    width = len(columns)
    well_formed = all(type(row) is list for row in data) and all(
        len(row) == width for row in data
    )
    for i, row in enumerate([] if well_formed else data):  # find the row to name
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else f"a JSON {type(row).__name__}"
            raise PayloadError(
                f"{DF_SPLIT}.data row {i} must be a list of {len(columns)} values "
                f"(one per column); got {got}",
                field=f"{DF_SPLIT}.data",
                row=i,
            )
    if not data:
        return RequestTable({c: [] for c in columns}, 0, DF_SPLIT)
    by_column = [list(col) for col in zip(*data, strict=True)] if columns else []
    return RequestTable(dict(zip(columns, by_column, strict=True)), len(data), DF_SPLIT)


def _from_records(value: Any, key: str) -> RequestTable:
    if not isinstance(value, list):
        raise PayloadError(
            f"{key} must be a list of row objects; got a JSON {type(value).__name__}", field=key
        )
    names: dict[str, None] = {}
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise PayloadError(
                f"{key} row {i} must be an object mapping column names to values; "
                f"got a JSON {type(record).__name__}",
                field=key,
                row=i,
            )
        names.update(dict.fromkeys(record))
    # A key absent from some records is null there, as pandas (and MLflow) read records.
    columns = {n: [r.get(n) for r in value] for n in names}
    return RequestTable(columns, len(value), key)


def _from_column_dict(value: dict[str, Any], key: str) -> RequestTable:
    if not value:
        return RequestTable({}, 0, key)
    lists = {k: v for k, v in value.items() if isinstance(v, list)}
    if not lists:  # one row given as {"col": value, ...}
        return RequestTable({k: [v] for k, v in value.items()}, 1, key)
    if len(lists) != len(value):
        scalar = next(k for k in value if k not in lists)
        raise PayloadError(
            f"{key} mixes lists and single values; column {scalar!r} must be a list like the others",
            field=scalar,
        )
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise PayloadError(
            f"{key} columns have different lengths {lengths}; every column needs one value per row",
            field=key,
        )
    return RequestTable(dict(lists), next(iter(lengths.values())), key)


def _parse_csv(body: bytes) -> RequestTable:
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except Exception as exc:  # pandas raises several parser error types
        raise PayloadError(f"request body is not a readable CSV table: {exc}") from None
    # `tolist` already gives Python scalars (int, float, bool, str): only missing cells change.
    columns = {
        str(name): [None if _is_missing(v) else v for v in frame[name].tolist()]
        for name in frame.columns
    }
    return RequestTable(columns, len(frame), "csv")


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------ validation


def validate_table(
    table: RequestTable,
    specs: Sequence[FeatureSpec],
    id_column: str,
    timestamp_column: str,
    request_time: pd.Timestamp,
) -> pd.DataFrame:
    """A frame of id, timestamp and the features, typed for scoring and logging.

    The id is required in every row; the timestamp is optional (request time where absent).
    Extra columns are ignored. Raises PayloadError (422) naming the column and row.
    """
    return validate_columns(table, specs, id_column, timestamp_column, request_time).to_frame()


def validate_columns(
    table: RequestTable,
    specs: Sequence[FeatureSpec],
    id_column: str,
    timestamp_column: str,
    request_time: pd.Timestamp,
) -> ColumnBatch:
    """`validate_table` without the DataFrame: the same checks and errors, the same values
    as numpy columns (what the service scores and logs; `.to_frame()` gives the frame)."""
    missing = [s.name for s in specs if s.name not in table.columns]
    if id_column not in table.columns:
        missing.insert(0, id_column)
    if missing:
        raise PayloadError(
            f"missing column(s) {missing}; every row needs the id column {id_column!r} and the "
            f"features {[s.name for s in specs]}",
            status=422,
            field=missing[0],
        )
    columns: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    columns[id_column], dtypes[id_column] = _ids(table.columns[id_column], id_column)
    columns[timestamp_column] = _timestamps(
        table.columns.get(timestamp_column), timestamp_column, table.n_rows, request_time
    )
    dtypes[timestamp_column] = "datetime64[us]"
    numeric = _numeric_block(table, specs)
    for spec in specs:
        values = numeric.get(spec.name)
        if values is None:
            values = _CONVERTERS[spec.kind](table.columns[spec.name], spec)
        columns[spec.name] = values
        dtypes[spec.name] = _DTYPES[spec.kind]
    return ColumnBatch(columns, dtypes, table.n_rows)


def _numeric_block(table: RequestTable, specs: Sequence[FeatureSpec]) -> dict[str, np.ndarray]:
    """Every numeric feature at once when all their values are plain numbers or nulls within
    float32 range (the usual request): one type scan and one array instead of one per column.
    Otherwise nothing, and each column goes through `_numeric` (which names the bad value)."""
    names = [s.name for s in specs if s.kind == "numeric"]
    if len(names) < 2:
        return {}
    lists = [table.columns[n] for n in names]
    if not set(map(type, chain.from_iterable(lists))) <= _NUMBER_TYPES:
        return {}
    try:
        block = np.array(lists, dtype=np.float64)
    except OverflowError:
        return {}
    if block.shape != (len(names), table.n_rows) or (np.abs(block) > _FLOAT32_MAX).any():
        return {}
    return dict(zip(names, block, strict=True))


def _ids(values: list[Any], column: str) -> tuple[np.ndarray, str]:
    if set(map(type, values)) == {int}:  # the usual case: integer ids (not bools)
        try:
            return np.array(values, dtype=np.int64), "int64"
        except OverflowError:
            pass  # beyond int64: logged as text below
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise PayloadError(
                f"column {column!r} row {i}: every row needs an entity id (string or integer) "
                f"to be routed; got {_show(v)}",
                status=422,
                field=column,
                row=i,
            )
        try:
            routing_key(v)
        except ValueError:
            raise PayloadError(
                f"column {column!r} row {i}: entity id must be finite; got {v!r}",
                status=422,
                field=column,
                row=i,
            ) from None
    if all(type(v) is int and _INT64_MIN <= v <= _INT64_MAX for v in values):
        return np.array(values, dtype=np.int64), "int64"
    # Mixed or text ids are logged as their routing key, so 7, 7.0 and "7" stay one entity.
    return _object_array([routing_key(v) for v in values]), "str"


def _timestamps(
    values: list[Any] | None, column: str, n_rows: int, request_time: pd.Timestamp
) -> np.ndarray:
    if values is None or all(v is None for v in values):
        # The request time's wall clock (its own zone; the service passes UTC). `.value`
        # counts UTC nanoseconds: add the offset back (cheaper than tz_localize(None)).
        offset = request_time.utcoffset()
        wall = request_time.value // 1000 + (offset // pd.Timedelta(microseconds=1) if offset else 0)
        return np.full(n_rows, np.datetime64(wall, "us"), dtype="datetime64[us]")
    now = request_time.tz_localize(None) if request_time.tzinfo else request_time
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            raise PayloadError(
                f"column {column!r} row {i}: expected an ISO 8601 timestamp string or null; "
                f"got {_show(v)}",
                status=422,
                field=column,
                row=i,
            )
    raw = pd.Series(values, dtype=object)
    # Naive strings are read as UTC; logged timestamps are naive UTC like the stream's batches.
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = raw.notna() & parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PayloadError(
            f"column {column!r} row {i}: {values[i]!r} is not an ISO 8601 timestamp",
            status=422,
            field=column,
            row=i,
        )
    naive = parsed.dt.tz_localize(None).astype("datetime64[us]")
    return naive.fillna(now).astype("datetime64[us]").to_numpy()


_NUMBER_TYPES = frozenset({float, int, type(None)})


def _numeric(values: list[Any], spec: FeatureSpec) -> np.ndarray:
    if set(map(type, values)) <= _NUMBER_TYPES:
        # The usual case, vectorized: numbers and nulls (None -> NaN).
        try:
            out = np.array(values, dtype=np.float64)
        except OverflowError:
            out = None
        # XGBoost reads float32 and refuses infinities; NaN is a missing value.
        if out is not None and not (np.abs(out) > _FLOAT32_MAX).any():
            return out
    return _numeric_checked(values, spec)


def _numeric_checked(values: list[Any], spec: FeatureSpec) -> np.ndarray:
    """Value by value, raising on the first value that is not a usable number."""
    out: list[float] = []
    for i, v in enumerate(values):
        kind = type(v)
        if v is None:
            out.append(math.nan)
        elif kind is float or kind is int:
            try:
                number = float(v)
            except OverflowError:
                number = math.inf
            if abs(number) > _FLOAT32_MAX:
                raise _type_error(spec, i, v, f"a finite number within ±{_FLOAT32_MAX:.4g} or null")
            out.append(number)
        else:
            raise _type_error(spec, i, v, "a number or null")
    return np.array(out, dtype=np.float64)


_TEXT_TYPES = frozenset({str, type(None)})


def _string(values: list[Any], spec: FeatureSpec) -> np.ndarray:
    if set(map(type, values)) <= _TEXT_TYPES:
        return _object_array(values)
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None or isinstance(v, str):
            out.append(v)
        elif isinstance(v, bool):
            out.append("True" if v else "False")
        else:
            raise _type_error(spec, i, v, "a string, a boolean or null")
    return _object_array(out)


def _boolean(values: list[Any], spec: FeatureSpec) -> np.ndarray:
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool):
            out.append(v)
        elif isinstance(v, str) and v.lower() in ("true", "false"):
            out.append(v.lower() == "true")
        else:
            raise _type_error(spec, i, v, "true, false or null (the model was trained on booleans)")
    return _object_array(out)


def _integer(values: list[Any], spec: FeatureSpec) -> np.ndarray:
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if type(v) is int:
            code: int | None = v
        elif type(v) is float and v.is_integer():
            code = int(v)
        elif isinstance(v, str) and _is_int_text(v.strip()):
            code = int(v.strip())
        else:
            code = None
        if code is None or not _INT64_MIN <= code <= _INT64_MAX:
            raise _type_error(spec, i, v, "an integer category code, a string holding one, or null")
        out.append(code)
    return _object_array(out)


def _object_array(values: list[Any]) -> np.ndarray:
    # np.array(values, dtype=object) would build a 2-D array from nested sequences.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


_CONVERTERS = {"numeric": _numeric, "string": _string, "boolean": _boolean, "integer": _integer}
# The pandas dtype each kind has in frames and in the prediction log.
_DTYPES = {"numeric": "float64", "string": "object", "boolean": "boolean", "integer": "Int64"}


def _type_error(spec: FeatureSpec, row: int, value: Any, expected: str) -> PayloadError:
    what = "numeric" if spec.kind == "numeric" else "categorical"
    return PayloadError(
        f"column {spec.name!r} row {row}: {what} feature expects {expected}; got {_show(value)}",
        status=422,
        field=spec.name,
        row=row,
    )


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value, default=str)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
