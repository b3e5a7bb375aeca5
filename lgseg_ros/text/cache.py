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


def _stack(rows):
    """Rows as the wrapped encoder makes them: numpy (ONNX encoder) or torch tensors."""
    if isinstance(rows[0], np.ndarray):
        return np.stack(rows)
    import torch

    return torch.stack(rows)


class EmbeddingCache:
    """A bounded (least recently used out first), thread-safe map Key -> [D] row (numpy or torch)."""

    def __init__(self, max_entries: int = 65536):
        self.max_entries = max_entries
        self._rows: OrderedDict[Key, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Key):   # call with self.lock held
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: Key, row) -> None:   # call with self.lock held
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def __contains__(self, key: Key) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        with self.lock:
            self._rows.clear()


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
