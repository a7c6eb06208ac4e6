"""Request parsing and validation, without a server."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evergreen.apps.serving.schema import (
    FeatureSpec,
    PayloadError,
    RequestLimits,
    feature_specs,
    parse_body,
    validate_table,
)

LIMITS = RequestLimits()
NOW = pd.Timestamp("2024-06-01 12:00:00", tz="UTC")
SPECS = feature_specs(
    ["x", "color", "flag", "code"],
    {"color": ["blue", "red"], "flag": ["False", "True"], "code": ["1", "2", "10"]},
)


def _parse(obj: object) -> pd.DataFrame:
    table = parse_body(json.dumps(obj).encode(), "application/json", LIMITS)
    return validate_table(table, SPECS, "id", "timestamp", NOW)


def test_kinds_follow_the_training_categories() -> None:
    assert [s.kind for s in SPECS] == ["numeric", "string", "boolean", "integer"]


def test_values_are_typed_like_the_reference_data() -> None:
    frame = _parse(
        {
            "dataframe_records": [
                {"id": 1, "x": 1, "color": "red", "flag": True, "code": 2},
                {"id": 2, "x": None, "color": False, "flag": "false", "code": "10"},
                {"id": 3, "x": 2.5, "color": None, "flag": None, "code": 1.0},
            ]
        }
    )
    assert frame["x"].dtype == "float64" and frame["x"].isna().tolist() == [False, True, False]
    assert frame["color"].tolist()[:2] == ["red", "False"] and pd.isna(frame["color"][2])
    assert frame["flag"].dtype == "boolean" and frame["flag"].tolist()[:2] == [True, False]
    assert frame["code"].dtype == "Int64" and frame["code"].tolist() == [2, 10, 1]
    assert frame["id"].dtype == "int64"
    assert (frame["timestamp"] == NOW.tz_localize(None)).all()
    assert frame["timestamp"].dtype == "datetime64[us]"


def test_mixed_ids_are_kept_as_their_routing_keys() -> None:
    base = {"x": 1.0, "color": "red", "flag": True, "code": 1}
    frame = _parse(
        {"dataframe_records": [{**base, "id": 7}, {**base, "id": "c-9"}, {**base, "id": 8.0}]}
    )
    assert frame["id"].tolist() == ["7", "c-9", "8"]


def test_timestamps_become_naive_utc_and_default_to_request_time() -> None:
    base = {"id": 1, "x": 1.0, "color": "red", "flag": True, "code": 1}
    frame = _parse(
        {
            "dataframe_records": [
                {**base, "timestamp": "2024-05-01T10:00:00+02:00"},
                {**base, "timestamp": "2024-05-01 10:00:00"},
                {**base, "timestamp": None},
            ]
        }
    )
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2024-05-01 08:00"),
        pd.Timestamp("2024-05-01 10:00"),
        pd.Timestamp("2024-06-01 12:00"),
    ]


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("x", "1.5", "a number"),
        ("x", 1e39, "finite number"),  # beyond float32: XGBoost would fail on it
        ("x", float("inf"), "finite number"),  # Python's JSON reader accepts Infinity
        ("x", 10**400, "finite number"),
        ("color", 3, "a string"),
        ("flag", "yes", "true, false"),
        ("code", "abc", "integer category"),
        ("code", 1.5, "integer category"),
        ("id", [1], "entity id"),
        ("timestamp", 1700000000, "ISO 8601"),
    ],
)
def test_wrong_types_name_column_and_row(column: str, value: object, expected: str) -> None:
    rows = [{"id": i, "x": 1.0, "color": "red", "flag": True, "code": 1} for i in range(3)]
    rows[2][column] = value
    with pytest.raises(PayloadError) as err:
        _parse({"instances": rows})
    assert err.value.status == 422 and err.value.field == column and err.value.row == 2
    assert expected in err.value.message and repr(column) in err.value.message


def test_columnar_and_single_row_inputs() -> None:
    columns = {
        "id": [1, 2],
        "x": [0.5, 1.5],
        "color": ["red", "blue"],
        "flag": [True, False],
        "code": [1, 2],
    }
    assert _parse({"inputs": columns})["x"].tolist() == [0.5, 1.5]
    single = {"id": 1, "x": 0.5, "color": "red", "flag": True, "code": 1}
    assert len(_parse({"inputs": single})) == 1
    with pytest.raises(PayloadError, match="different lengths"):
        _parse({"inputs": {**columns, "x": [1.0]}})
    with pytest.raises(PayloadError, match="mixes lists"):
        _parse({"inputs": {**columns, "x": 1.0}})


def test_csv_bodies() -> None:
    csv = b"id,x,color,flag,code\n1,0.5,red,True,1\n2,,,False,10\n"
    table = parse_body(csv, "text/csv; charset=utf-8", LIMITS)
    frame = validate_table(table, SPECS, "id", "timestamp", NOW)
    assert frame["id"].tolist() == [1, 2]
    assert frame["x"].isna().tolist() == [False, True]
    assert frame["flag"].tolist() == [True, False] and frame["code"].tolist() == [1, 10]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
        (b'"text"', 400, "JSON object"),
        (b'{"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}', 400, "more than once"),
        (b'{"dataframe_split": {"columns": ["a"]}}', 400, "data must be a list"),
        (b'{"instances": [[1, 2]]}', 400, "row 0 must be an object"),
        (b'{"instances": {}}', 400, "empty"),
    ],
)
def test_malformed_bodies(body: bytes, status: int, needle: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_body(body, None, LIMITS)
    assert err.value.status == status and needle in err.value.message


def test_limits_give_413() -> None:
    rows = [{"id": i} for i in range(11)]
    with pytest.raises(PayloadError) as err:
        parse_body(
            json.dumps({"dataframe_records": rows}).encode(), None, RequestLimits(max_rows=10)
        )
    assert err.value.status == 413 and "10 rows" in err.value.message
    with pytest.raises(PayloadError) as err:
        parse_body(b" " * 101 + b"{}", None, RequestLimits(max_body_bytes=100))
    assert err.value.status == 413


def test_error_body_has_mlflow_fields() -> None:
    body = PayloadError("column 'x' row 2: bad", status=422, field="x", row=2).to_dict()
    assert body == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "column 'x' row 2: bad",
        "field": "x",
        "row": 2,
    }


def test_numeric_kind_is_the_default_for_unknown_categories() -> None:
    assert feature_specs(["a", "b"], {"b": []}) == [
        FeatureSpec("a", "numeric"),
        FeatureSpec("b", "string"),
    ]
