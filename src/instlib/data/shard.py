"""``--shard i/n``: split embarrassingly parallel work across machines without coordination.

Item ``k`` of a sorted list belongs to shard ``k mod n``; every shard sees the same sorted list,
so shards never overlap and their union is the whole list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"i/n"`` (0-based ``i``) into ``(i, n)``; ``None`` or ``""`` means no sharding."""
    if not text:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (for example 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of ``shard`` (all items when ``shard`` is None)."""
    if shard is None:
        return list(items)
    i, n = shard
    return [item for k, item in enumerate(items) if k % n == i]
