"""A small cache of values computed once per tensor, keyed by identity."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


class IdentityCache:
    """Values computed once per object, for the last ``size`` objects,
    keyed by identity through weak references, and for tensors by their
    version counter too: a tensor its owner drops (FREEDOM's pruned graph
    of an earlier epoch) is dropped here, one changed in place is computed
    again, and pickling or copying the owner leaves the cache behind.

    Args:
        size (int, optional): Objects remembered. (default: :obj:`8`)
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.entries: list[tuple[weakref.ref, Any, Any]] = []

    def get(self, obj: Any, compute: Callable[[Any], Any]) -> Any:
        """Return ``compute(obj)``, computed once while ``obj`` lives
        unchanged.
        """
        version = getattr(obj, "_version", None)
        self.entries = [entry for entry in self.entries
                        if entry[0]() is not None]
        for ref, seen, value in self.entries:
            if ref() is obj and seen == version:
                return value
        value = compute(obj)
        kept = [entry for entry in self.entries if entry[0]() is not obj]
        self.entries = kept[len(kept) - self.size + 1:] if self.size > 1 \
            else []
        self.entries.append((weakref.ref(obj), version, value))
        return value

    def __len__(self) -> int:
        return sum(ref() is not None for ref, _, _ in self.entries)

    def __getstate__(self) -> dict:
        return {"size": self.size, "entries": []}
