"""Training-window assembly and label joins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ColumnRoles, RetrainPolicyConfig
from evergreen.decisions.window import LabelledBatch, WindowError, assemble_window, join_labels

COLUMNS = ColumnRoles(
    target="repaid", features=["car_value", "salary_range"], categorical=["salary_range"]
)
WANTED = ["id", "timestamp", "car_value", "salary_range", "repaid"]


def _batch_frame(day: str, rows: int = 4, start_id: int = 0, labelled: bool = True) -> pd.DataFrame:
    """One day of production rows with prediction columns and (optionally) labels."""
    rng = np.random.default_rng(start_id)
    frame = pd.DataFrame(
        {
            "id": np.arange(start_id, start_id + rows),
            "timestamp": pd.date_range(day, periods=rows, freq=pd.Timedelta(hours=24) / rows),
            "car_value": rng.normal(20_000, 5_000, rows).round(2),
            "salary_range": rng.choice(["0 - 20K €", "20K - 40K €"], rows),
            "y_pred": rng.integers(0, 2, rows),
            "y_pred_proba": rng.random(rows),
            "model_version": "1",
        }
    )
    if labelled:
        frame["repaid"] = rng.integers(0, 2, rows).astype(float)
    return frame


def _batches(days: int = 10, rows: int = 4) -> list[LabelledBatch]:
    start = pd.Timestamp("2019-02-01")
    return [
        LabelledBatch(
            batch_id=(start + pd.Timedelta(days=i)).strftime("%Y-%m-%d"),
            frame=_batch_frame(
                (start + pd.Timedelta(days=i)).strftime("%Y-%m-%d"), rows, 1000 + 100 * i
            ),
        )
        for i in range(days)
    ]


def _reference(rows: int = 5) -> pd.DataFrame:
    frame = _batch_frame("2019-01-01", rows, 0).drop(
        columns=["y_pred", "y_pred_proba", "model_version"]
    )
    return frame.iloc[::-1].reset_index(drop=True)  # out of time order on purpose


def _policy(**kwargs) -> RetrainPolicyConfig:
    return RetrainPolicyConfig(**kwargs)


def test_expanding_keeps_every_labelled_row_in_time_order() -> None:
    batches = _batches(5)
    shuffled = [batches[i] for i in (3, 0, 4, 1, 2)]
    window = assemble_window(
        None, shuffled, _policy(window="expanding", include_reference=False), COLUMNS
    )
    assert window.rows == 20 == len(window.frame)
    assert list(window.frame.columns) == WANTED
    assert window.frame["timestamp"].is_monotonic_increasing
    assert sorted(window.sources) == [b.batch_id for b in batches]
    assert window.sources == [b.batch_id for b in batches]  # in time order
    assert window.excluded == {}
    assert window.time_min == pd.Timestamp("2019-02-01", tz="UTC")
    assert window.time_max == pd.Timestamp("2019-02-05 18:00", tz="UTC")


def test_sliding_days_keeps_the_last_days_before_now() -> None:
    batches = _batches(10)
    policy = _policy(window="sliding", window_days=3, include_reference=False)
    window = assemble_window(None, batches, policy, COLUMNS, now=pd.Timestamp("2019-02-11"))
    assert window.sources == ["2019-02-08", "2019-02-09", "2019-02-10"]
    assert window.rows == 12
    assert window.window_start == pd.Timestamp("2019-02-08", tz="UTC")
    assert window.frame["timestamp"].min() >= window.window_start
    assert set(window.excluded) == {b.batch_id for b in batches[:7]}
    assert all("sliding window" in reason for reason in window.excluded.values())


def test_sliding_days_without_now_ends_at_the_newest_row() -> None:
    window = assemble_window(
        None, _batches(10), _policy(window_days=2, include_reference=False), COLUMNS
    )
    # newest row 2019-02-10 18:00 -> window from 2019-02-08 18:00
    assert window.sources == ["2019-02-08", "2019-02-09", "2019-02-10"]
    assert window.frame["timestamp"].min() == pd.Timestamp("2019-02-08 18:00", tz="UTC")
    assert window.rows == 9


def test_rows_after_now_are_never_used() -> None:
    policy = _policy(window="expanding", include_reference=False)
    window = assemble_window(
        None, _batches(5), policy, COLUMNS, now=pd.Timestamp("2019-02-03 06:00")
    )
    assert window.frame["timestamp"].max() <= pd.Timestamp("2019-02-03 06:00", tz="UTC")
    assert window.rows == 4 + 4 + 2
    assert "after now" in window.excluded["2019-02-04"]


def test_sliding_rows_keeps_the_newest_rows() -> None:
    policy = _policy(window="sliding", window_days=None, window_rows=100, include_reference=False)
    window = assemble_window(None, _batches(10, rows=15), policy, COLUMNS)
    assert window.rows == 100
    all_rows = pd.concat([b.frame for b in _batches(10, rows=15)]).sort_values("timestamp")
    assert window.frame["id"].tolist() == all_rows["id"].tail(100).tolist()
    assert window.sources[0] == "2019-02-04"  # partly used
    assert "2019-02-03" in window.excluded


def test_a_window_takes_one_unit_and_names_the_conflict() -> None:
    """Behaviour changed on purpose (issue 16): days and rows used to both apply; now a
    window has one unit, and two given at once are a config error naming both fields."""
    from evergreen.config import ConfigError, parse_config

    raw = {
        "name": "m",
        "columns": {"target": "repaid", "features": ["car_value"]},
        "mlflow": {"model_name": "m"},
        "retrain": {"window_days": 5, "window_rows": 100},
    }
    with pytest.raises(ConfigError, match=r"retrain\.window_days, retrain\.window_rows"):
        parse_config(raw)
    with pytest.raises(ConfigError, match=r"retrain\.cooldown_hours, retrain\.cooldown_batches"):
        parse_config({**raw, "retrain": {"cooldown_hours": 24, "cooldown_batches": 2}})


def test_one_unit_replaces_the_default_days() -> None:
    assert _policy().window_unit == ("days", 14)
    assert _policy().cooldown_unit == ("hours", 168.0)
    batches = _policy(window_batches=3)
    assert batches.window_days is None and batches.window_unit == ("batches", 3)
    assert _policy(window_rows=500).window_unit == ("rows", 500)
    assert _policy(cooldown_batches=2).cooldown_unit == ("batches", 2)
    assert _policy(cooldown_batches=2).cooldown_hours is None
    assert _policy(window="expanding").window_unit is None
    # the block stores the config as a mapping: it reads back the same
    again = RetrainPolicyConfig.model_validate(batches.model_dump())
    assert again == batches


def test_sliding_batches_keeps_the_newest_labelled_batches_whole() -> None:
    batches = _batches(10, rows=6)
    batches[-1] = LabelledBatch(batches[-1].batch_id, batches[-1].frame.drop(columns="repaid"))  # no labels yet
    policy = _policy(window_batches=3, include_reference=False)
    window = assemble_window(None, batches, policy, COLUMNS)
    # the newest batch has no labels: the three newest labelled ones count
    assert window.sources == ["2019-02-07", "2019-02-08", "2019-02-09"]
    assert window.rows == 18
    assert window.window_start == pd.Timestamp("2019-02-07", tz="UTC")
    assert "retrain.window_batches" in window.excluded["2019-02-06"]
    assert window.excluded["2019-02-10"].startswith("no labels")


def test_a_monthly_stream_keeps_its_batches_where_14_days_kept_none() -> None:
    """Issue 16: a 14-day window on monthly batches trained on the reference alone."""
    months = [
        LabelledBatch(day, _batch_frame(day, 30, 1000 + 100 * i))
        for i, day in enumerate(["2019-01-01", "2019-02-01", "2019-03-01", "2019-04-01"])
    ]
    now = pd.Timestamp("2019-04-30")  # each batch's rows fall on its first day
    by_days = assemble_window(None, months, _policy(include_reference=False), COLUMNS, now=now)
    assert by_days.batch_rows == 0
    by_batches = assemble_window(None, months, _policy(window_batches=3, include_reference=False), COLUMNS, now=now)
    assert by_batches.sources == ["2019-02-01", "2019-03-01", "2019-04-01"]
    assert by_batches.batch_rows == 90


def test_reference_comes_first_and_is_not_windowed() -> None:
    reference = _reference(5)
    policy = _policy(window="sliding", window_days=2, include_reference=True)
    window = assemble_window(reference, _batches(10), policy, COLUMNS)
    assert window.reference_rows == 5
    assert window.frame["id"].head(5).tolist() == [0, 1, 2, 3, 4]  # sorted by time
    assert window.rows == 5 + 9
    assert window.frame["timestamp"].is_monotonic_increasing
    assert window.time_min == pd.Timestamp("2019-01-01", tz="UTC")
    assert "reference" not in window.sources


def test_reference_is_skipped_when_the_policy_says_so() -> None:
    policy = _policy(window="expanding", include_reference=False)
    window = assemble_window(_reference(), _batches(2), policy, COLUMNS)
    assert window.reference_rows == 0 and window.rows == 8


def test_reference_without_timestamps_still_comes_first() -> None:
    reference = _reference(3).drop(columns="timestamp")
    window = assemble_window(reference, _batches(2), _policy(window="expanding"), COLUMNS)
    assert window.frame["timestamp"].head(3).isna().all()
    assert window.frame["id"].head(3).tolist() == [2, 1, 0]
    assert window.rows == 11


def test_reference_missing_a_feature_is_an_error() -> None:
    with pytest.raises(WindowError, match="car_value"):
        assemble_window(_reference().drop(columns="car_value"), _batches(1), _policy(), COLUMNS)


def test_invalid_and_unlabelled_batches_are_excluded_with_reasons() -> None:
    batches = _batches(4)
    batches[1] = LabelledBatch(
        batches[1].batch_id,
        batches[1].frame,
        valid=False,
        reason="expect_column_values_to_not_be_null: car_value",
    )
    batches[2] = LabelledBatch(batches[2].batch_id, batches[2].frame.drop(columns="repaid"))
    no_labels = batches[3].frame.assign(repaid=np.nan)
    batches[3] = LabelledBatch(batches[3].batch_id, no_labels)
    extra = LabelledBatch(
        "2019-02-09", _batch_frame("2019-02-09", 4, 9000).drop(columns="car_value")
    )
    window = assemble_window(
        None, [*batches, extra], _policy(window="expanding", include_reference=False), COLUMNS
    )
    assert window.sources == ["2019-02-01"]
    assert window.rows == 4
    assert window.excluded == {
        "2019-02-02": "expect_column_values_to_not_be_null: car_value",
        "2019-02-03": "no labels joined (column 'repaid' missing)",
        "2019-02-04": "no labelled rows",
        "2019-02-09": "missing column(s) ['car_value']",
    }


def test_invalid_batch_without_reason_gets_a_default_one() -> None:
    batch = _batches(1)[0]
    invalid = LabelledBatch(batch.batch_id, batch.frame, valid=False)
    window = assemble_window(None, [invalid], _policy(include_reference=False), COLUMNS)
    assert window.rows == 0 and window.sources == []
    assert window.excluded == {batch.batch_id: "failed validation"}
    assert list(window.frame.columns) == WANTED
    assert window.time_min is None and window.time_max is None


def test_only_labelled_rows_are_kept() -> None:
    frame = _batch_frame("2019-02-01", 6, 0)
    frame.loc[[1, 4], "repaid"] = np.nan
    window = assemble_window(
        None, [LabelledBatch("d", frame)], _policy(include_reference=False), COLUMNS
    )
    assert window.frame["id"].tolist() == [0, 2, 3, 5]
    assert window.frame["repaid"].notna().all()


def test_inputs_are_not_mutated() -> None:
    batches = _batches(3)
    reference = _reference()
    before = [b.frame.copy() for b in batches], reference.copy()
    assemble_window(
        reference, batches, _policy(window_days=1), COLUMNS, now=pd.Timestamp("2019-02-03")
    )
    for frame, original in zip([b.frame for b in batches], before[0], strict=True):
        pd.testing.assert_frame_equal(frame, original)
    pd.testing.assert_frame_equal(reference, before[1])


def test_duplicate_batch_ids_are_rejected() -> None:
    batch = _batches(1)[0]
    with pytest.raises(WindowError, match="listed twice"):
        assemble_window(None, [batch, batch], _policy(), COLUMNS)


def test_tz_aware_and_naive_timestamps_mix() -> None:
    batches = _batches(2)
    aware = batches[1].frame.assign(timestamp=batches[1].frame["timestamp"].dt.tz_localize("UTC"))
    batches[1] = LabelledBatch(batches[1].batch_id, aware)
    window = assemble_window(
        None, batches, _policy(window="expanding", include_reference=False), COLUMNS
    )
    assert str(window.frame["timestamp"].dt.tz) == "UTC"
    assert window.frame["timestamp"].is_monotonic_increasing


# --------------------------------------------------------------------------- join_labels


def test_join_labels_is_an_inner_join_on_id_in_batch_order() -> None:
    batch = _batch_frame("2019-02-01", 5, 10, labelled=False)
    labels = pd.DataFrame({"id": [14, 10, 12, 99], "repaid": [1, 0, 1, 1]})
    joined = join_labels(batch, labels, COLUMNS)
    assert joined["id"].tolist() == [10, 12, 14]
    assert joined["repaid"].tolist() == [0, 1, 1]
    assert list(joined.columns) == [*batch.columns, "repaid"]
    pd.testing.assert_frame_equal(
        joined.drop(columns="repaid"), batch.iloc[[0, 2, 4]].reset_index(drop=True)
    )
    assert "repaid" not in batch.columns  # input untouched


def test_join_labels_replaces_a_stale_target_column() -> None:
    batch = _batch_frame("2019-02-01", 3, 0).assign(repaid=np.nan)
    labels = pd.DataFrame({"id": [0, 1, 2], "repaid": [1, 1, 0]})
    assert join_labels(batch, labels, COLUMNS)["repaid"].tolist() == [1, 1, 0]


def test_join_labels_then_window_uses_only_labelled_rows() -> None:
    batch = _batch_frame("2019-02-01", 5, 10, labelled=False)
    labels = pd.DataFrame({"id": [11, 13], "repaid": [1, 0]})
    joined = join_labels(batch, labels, COLUMNS)
    window = assemble_window(
        None, [LabelledBatch("2019-02-01", joined)], _policy(include_reference=False), COLUMNS
    )
    assert window.frame["id"].tolist() == [11, 13]


def test_duplicate_label_ids_are_a_clear_error() -> None:
    batch = _batch_frame("2019-02-01", 3, 0, labelled=False)
    labels = pd.DataFrame({"id": [0, 1, 1, 2, 2], "repaid": [1, 0, 1, 1, 1]})
    with pytest.raises(WindowError, match=r"2 duplicate id\(s\) in column 'id' \(e.g. \[1, 2\]\)"):
        join_labels(batch, labels, COLUMNS)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (pd.DataFrame({"id": [0], "label": [1]}), "labels lack column"),
        (pd.DataFrame({"id": ["0"], "repaid": [1]}), "same type"),
    ],
)
def test_malformed_labels_are_named(labels: pd.DataFrame, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        join_labels(_batch_frame("2019-02-01", 2, 0, labelled=False), labels, COLUMNS)


def test_an_episodes_hold_out_is_post_change_and_its_rows_weigh_half() -> None:
    from evergreen.decisions.window import post_change_weights, split_at_change

    stamps = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC")
    frame = pd.DataFrame({"ts": stamps, "x": range(1000)})
    change = stamps[800]  # 200 rows after the change
    train, evaluation = split_at_change(frame, "ts", change, evaluation_fraction=0.2, min_evaluation_rows=60)
    # Few post-change rows: half are held out (the gate's test needs them), half are learnt from.
    assert len(evaluation) == 100 and (evaluation["ts"] >= change).all()
    assert len(train) == 900 and train["ts"].max() < evaluation["ts"].min()
    # The hold-out is the next monitor's reference: never fewer than `floor_rows`.
    _, floor = split_at_change(frame, "ts", change, 0.2, min_evaluation_rows=60, floor_rows=150)
    assert len(floor) == 150
    # Plenty of post-change rows: the configured fraction.
    many = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=60_000, freq="min", tz="UTC"), "x": 0})
    _, share = split_at_change(many, "ts", many["ts"][10_000], 0.2, min_evaluation_rows=500)
    assert len(share) == 10_000
    weights = post_change_weights(train["ts"], change, share=0.5)
    post = (train["ts"] >= change).to_numpy()
    assert weights[post].sum() == pytest.approx(weights[~post].sum())  # half the weight each
    assert set(weights[~post]) == {1.0}
    assert post_change_weights(train["ts"], change, share=0.0) is None
    assert split_at_change(frame, "ts", stamps[-1] + pd.Timedelta(hours=1), 0.2, 10) is None
