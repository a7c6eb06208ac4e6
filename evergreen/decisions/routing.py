"""Champion/canary routing: a pure, deterministic decision per entity id.

Each row goes to `canary` when the sha256 of its entity id (salted by the model name)
falls below the canary traffic share, else to `champion`. The same id always lands on the
same side for the same model and share, so one customer sees one model during a canary, and
raising the share only moves ids from champion to canary (never back).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from functools import lru_cache
from numbers import Integral, Real
from typing import Any

from evergreen.aliases import CANARY, CHAMPION

_BUCKETS = float(2**64)


def routing_key(entity_id: object) -> str:
    """The canonical text of an entity id: 7, 7.0 and "7" are the same entity.

    JSON clients send ids as numbers or strings and CSV readers turn integers into floats,
    so integral numbers are written without a fraction before hashing.
    """
    kind = type(entity_id)
    if kind is str:  # the usual cases first: this runs for every scored row
        return entity_id  # type: ignore[return-value]
    if kind is int:
        return str(entity_id)
    if isinstance(entity_id, bool):
        raise TypeError(f"entity id must be a string or a number, not a boolean ({entity_id!r})")
    if isinstance(entity_id, str):
        return entity_id
    if isinstance(entity_id, Integral):
        return str(int(entity_id))
    if isinstance(entity_id, Real):
        value = float(entity_id)
        if not math.isfinite(value):
            raise ValueError(f"entity id must be finite, got {entity_id!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    raise TypeError(f"entity id must be a string or a number, got {type(entity_id).__name__}")


def routing_bucket(entity_id: object, salt: str) -> float:
    """Where an id falls in [0, 1): the first 8 bytes of sha256(salt, id) as a fraction."""
    digest = _salted(salt).copy()
    digest.update(routing_key(entity_id).encode())
    return int.from_bytes(digest.digest()[:8], "big") / _BUCKETS


@lru_cache(maxsize=64)
def _salted(salt: str) -> Any:
    """sha256 fed with the salt and the separator; copied per id (same digest as hashing
    salt, separator and id in one go, without re-hashing the salt every time)."""
    return hashlib.sha256(f"{salt}\x00".encode())


def route(entity_id: object, salt: str, canary_share: float, has_canary: bool) -> str:
    """The alias that serves this id: `canary` for the configured share when a canary exists.

    A share of 0 sends nothing and a share of 1 everything to the canary (buckets are < 1).
    """
    _check_share(canary_share)
    if not has_canary or canary_share <= 0.0:
        return CHAMPION
    return CANARY if routing_bucket(entity_id, salt) < canary_share else CHAMPION


def route_many(
    entity_ids: Iterable[object], salt: str, canary_share: float, has_canary: bool
) -> list[str]:
    """`route` for each id, in order."""
    _check_share(canary_share)
    if not has_canary or canary_share <= 0.0:
        return [CHAMPION for _ in entity_ids]
    # routing_bucket inlined: this runs for every row of every request. The 8-byte prefix
    # of the digest is compared as bytes (big-endian, like the integer) with the first
    # bucket that goes to champion, which is exactly `bucket < canary_share`.
    bound = _canary_bound(canary_share)
    if bound >= 2**64:
        return [CANARY for _ in entity_ids]
    limit, prefix, sha256 = bound.to_bytes(8, "big"), f"{salt}\x00".encode(), hashlib.sha256
    return [
        CANARY if sha256(prefix + routing_key(i).encode()).digest()[:8] < limit else CHAMPION
        for i in entity_ids
    ]


@lru_cache(maxsize=64)
def _canary_bound(share: float) -> int:
    """The smallest 64-bit bucket integer x with x / 2**64 >= share (as `routing_bucket`
    computes it, in floating point); 2**64 when there is none. Floating-point rounding is
    monotonic, so the ids with x below it are exactly those routed to the canary."""
    lo, hi = 0, 2**64
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / _BUCKETS < share:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary traffic share must be within [0, 1], got {share}")
