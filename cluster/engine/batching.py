"""Group images into GPU batches of one shape."""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")


def plan_batches(items: Sequence[T], key: Callable[[T], Hashable], max_batch_size: int) -> list[list[T]]:
    """Split `items` into batches of equal `key`, each at most `max_batch_size` long.

    Groups keep the order in which their key first appears, and items keep their order within
    a group, so a plan is deterministic for a given input.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [
        group[start : start + max_batch_size]
        for group in groups.values()
        for start in range(0, len(group), max_batch_size)
    ]
