"""Words WordNet says name a trained concept, read as that concept (no WordNet at run time).

The text space does not always put a word near what it names ("walker" lands nearest
"hill"), so a label the shipped table (word_aliases.json, built by
``python -m lgseg_ros.train.aliases``; the rule is there) lists as a name or a kind of a
concept the model was trained on is read as that concept's name: its embedding is the
name's, and the grounding report says the name. A word the table lists under two concepts
the model both knows, a word that is itself a trained name or distractor, and every word
not in the table go through the embedding search as before.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

ALIAS_FILE = Path(__file__).with_name("word_aliases.json")
FORMAT = 1
# The shipped table is about 0.4 MB; a file far larger is not ours.
MAX_ALIAS_FILE_BYTES = 8 << 20


@lru_cache(maxsize=1)
def shipped_aliases() -> Mapping[str, tuple[str, ...]]:
    """word -> the concepts it names (usually one), from the package's table."""
    return load_aliases(ALIAS_FILE)


def load_aliases(path: str | Path) -> dict[str, tuple[str, ...]]:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_ALIAS_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than an alias table can be ({MAX_ALIAS_FILE_BYTES})")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an alias table of format {FORMAT}")
    table = data.get("aliases")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: no 'aliases' mapping")
    # one shared string per concept: 19,500 words name 127 concepts
    concepts: dict[str, str] = {}
    return {str(w): tuple(concepts.setdefault(str(c), str(c)) for c in cs)
            for w, cs in table.items() if isinstance(cs, list)}


def normalise(label: str) -> str:
    """Lower case, single spaces: how the table's words are written."""
    return re.sub(r"\s+", " ", label.strip().lower())


def _singulars(word: str) -> Iterable[str]:
    yield word
    if len(word) > 3 and word.endswith("ies"):
        yield word[:-3] + "y"
    if len(word) > 3 and word.endswith("es"):
        yield word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        yield word[:-1]


class AliasReader:
    """The table restricted to one model's concepts (and not shadowing its trained names)."""

    def __init__(self, concepts: Iterable[str], trained_words: Iterable[str],
                 table: Mapping[str, tuple[str, ...]] | None = None):
        self._concepts = frozenset(concepts)
        self._trained = frozenset(normalise(w) for w in trained_words)
        # read on the first word that is not a trained name (35 ms, about 5 MB): a node
        # whose labels are all trained names never pays for it
        self._given = table

    @property
    def _table(self) -> Mapping[str, tuple[str, ...]]:
        return shipped_aliases() if self._given is None else self._given

    def concept_of(self, label: str) -> str | None:
        """The concept ``label`` names by the table, or None (not listed, a trained word, or
        listed under several concepts this model knows)."""
        word = normalise(label)
        if not word or len(word) > 64 or word in self._trained:
            return None
        for form in _singulars(word):
            if form in self._trained:
                return None
            known = [c for c in self._table.get(form, ()) if c in self._concepts]
            if len(known) == 1:
                return known[0]
            if known:
                return None
        return None
