"""The champion/canary split: deterministic, stable per id, and on the configured share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evergreen.adapters.registry import CANARY, CHAMPION
from evergreen.decisions.routing import route, route_many, routing_bucket, routing_key

N_IDS = 100_000


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.9])
def test_share_within_sampling_error(share: float) -> None:
    aliases = route_many(range(N_IDS), "car-loan", share, has_canary=True)
    observed = aliases.count(CANARY) / N_IDS
    sigma = math.sqrt(share * (1 - share) / N_IDS)
    assert abs(observed - share) < 4 * sigma, (observed, share)


def test_string_ids_split_like_integers() -> None:
    ids = [f"customer-{i}" for i in range(N_IDS)]
    observed = route_many(ids, "m", 0.3, has_canary=True).count(CANARY) / N_IDS
    assert abs(observed - 0.3) < 4 * math.sqrt(0.3 * 0.7 / N_IDS)


def test_same_id_same_alias_every_time_and_in_any_order() -> None:
    ids = list(range(5000))
    first = dict(zip(ids, route_many(ids, "m", 0.4, True), strict=True))
    shuffled = list(np.random.default_rng(0).permutation(ids))
    again = dict(zip(shuffled, route_many(shuffled, "m", 0.4, True), strict=True))
    assert first == again
    assert all(route(i, "m", 0.4, True) == first[i] for i in ids[:500])


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_zero_and_one_shares_are_exact(share: float) -> None:
    aliases = route_many(range(N_IDS), "m", share, has_canary=True)
    expected = CANARY if share == 1.0 else CHAMPION
    assert set(aliases) == {expected}


def test_without_a_canary_everything_goes_to_champion() -> None:
    assert set(route_many(range(1000), "m", 1.0, has_canary=False)) == {CHAMPION}
    assert route(7, "m", 0.9, has_canary=False) == CHAMPION


def test_raising_the_share_only_moves_ids_to_canary() -> None:
    ids = range(20_000)
    low = route_many(ids, "m", 0.1, True)
    high = route_many(ids, "m", 0.3, True)
    moved_back = [
        i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a == CANARY and b == CHAMPION
    ]
    assert moved_back == []
    assert high.count(CANARY) > low.count(CANARY)


def test_salt_gives_each_model_an_independent_split() -> None:
    ids = range(20_000)
    a = np.array(route_many(ids, "model-a", 0.5, True)) == CANARY
    b = np.array(route_many(ids, "model-b", 0.5, True)) == CANARY
    agreement = float((a == b).mean())
    assert 0.47 < agreement < 0.53  # independent halves agree ~50% of the time


@pytest.mark.parametrize(("a", "b"), [(7, "7"), (7, 7.0), (np.int64(7), 7), ("x-1", "x-1")])
def test_equal_ids_in_different_json_types_route_alike(a: object, b: object) -> None:
    assert routing_key(a) == routing_key(b)
    assert routing_bucket(a, "m") == routing_bucket(b, "m")


def test_buckets_are_pinned() -> None:
    # Pinned values: a refactor of the hash must not silently reshuffle live traffic.
    assert routing_bucket(42, "m") == pytest.approx(0.37777834108946184, abs=1e-15)
    assert routing_bucket("customer-1", "car-loan") == pytest.approx(0.6403849157459806, abs=1e-15)


@pytest.mark.parametrize("bad", [True, None, [1], float("nan")])
def test_unroutable_ids_are_rejected(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        routing_key(bad)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_share_outside_unit_interval_is_rejected(share: float) -> None:
    with pytest.raises(ValueError, match="within"):
        route(1, "m", share, True)


@pytest.mark.parametrize("share", [1e-300, 0.1, 0.2, 1 / 3, 0.5, 0.999999, 1 - 2**-53, 1.0])
def test_route_many_equals_the_bucket_rule_even_at_the_boundary(share: float) -> None:
    """route_many compares digest bytes with a precomputed bound: it must agree with
    `routing_bucket(id) < share` (floating point) for every id, including ids whose bucket
    sits next to the bound."""
    from evergreen.decisions.routing import _BUCKETS, _canary_bound

    bound = _canary_bound(share)
    assert bound >= 2**64 or bound / _BUCKETS >= share
    assert bound == 0 or (bound - 1) / _BUCKETS < share
    ids = [*range(5000), *(f"user-{i}" for i in range(2000)), 7.0, "7", -3]
    rule = [CANARY if routing_bucket(i, "m") < share else CHAMPION for i in ids]
    assert route_many(ids, "m", share, True) == rule
