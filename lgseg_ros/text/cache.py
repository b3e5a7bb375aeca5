"""Per-label embedding cache: a label set is encoded once, and a label seen before is free.

Keys are (encoder name, template, label string), so encoders or prompt templates sharing
one ``EmbeddingCache`` never mix rows. Thread-safe: the node prepares label sets off the
frame thread.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from lgseg_ros.text.encoders import TextEncoder, check_labels

Key = tuple[str, "str | None", str]


def _nbytes(row) -> int:
    return int(row.numel() * row.element_size()) if hasattr(row, "element_size") else int(row.nbytes)


def _stack(rows):
    """Rows as the wrapped encoder makes them: numpy (ONNX encoder) or torch tensors."""
    if isinstance(rows[0], np.ndarray):
        return np.stack(rows)
    import torch

    return torch.stack(rows)


def _own_copy(row):
    """A row that owns its memory. An encoder returns rows as views of its [N, D] batch, and
    a stored view kept the whole batch alive: after 6,000 crafted label sets the cache held
    1,125 MB, not the 96 MB its rows add up to (issue 20, item 8)."""
    return row.clone() if hasattr(row, "clone") else row.copy()


class EmbeddingCache:
    """A bounded (least recently used out first), thread-safe map Key -> [D] row (numpy or
    torch).

    Bounded by count and by bytes: each stored row is a copy that owns its memory, so the
    bytes counted are the bytes held."""

    def __init__(self, max_entries: int = 65536, max_bytes: int = 96 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: OrderedDict[Key, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Key):   # call with self.lock held
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: Key, row) -> None:   # call with self.lock held
        row = _own_copy(row)
        old = self._rows.pop(key, None)
        if old is not None:
            self.nbytes -= _nbytes(old)
        self._rows[key] = row
        self.nbytes += _nbytes(row)
        while len(self._rows) > 1 and (len(self._rows) > self.max_entries or self.nbytes > self.max_bytes):
            _, dropped = self._rows.popitem(last=False)
            self.nbytes -= _nbytes(dropped)

    def __contains__(self, key: Key) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        with self.lock:
            self._rows.clear()
            self.nbytes = 0


class CachedTextEncoder:
    """A TextEncoder that encodes only labels it has not seen; ``hits``/``misses`` count rows."""

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | None = None):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self.template = getattr(encoder, "template", None)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.hits = 0
        self.misses = 0

    def _key(self, label: str) -> Key:
        return (self.name, self.template, label)

    def encode(self, labels: Sequence[str]):
        items = check_labels(labels)
        with self.cache.lock:
            missing = list(dict.fromkeys(l for l in items if self._key(l) not in self.cache))
            self.misses += len(missing)
            self.hits += len(items) - len(missing)
        # Encode outside the lock: a slow encode must not block lookups of known labels.
        fresh = dict(zip(missing, self.encoder.encode(missing))) if missing else {}
        with self.cache.lock:
            for label, row in fresh.items():
                self.cache.put(self._key(label), row)
            rows = []
            for label in items:
                # A row may have been evicted by another thread between the locked sections.
                row = self.cache.get(self._key(label))
                rows.append(row if row is not None else fresh[label] if label in fresh
                            else self.encoder.encode([label])[0])
        return _stack(rows)

    def __len__(self) -> int:
        return len(self.cache)
