"""A small reader of the WordNet 3.0 noun database as Debian's ``wordnet-base`` installs it.

Training-time only: it builds the label vocabulary (``vocabulary.py``), whose result is a
JSON file shipped in the package, so neither robots nor a training run need WordNet.
The files' format is WordNet's own (wndb(5)); NLTK's reader insists on files this package
does not ship (``lexnames``, its own sense maps), so the few lines needed are read here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/usr/share/wordnet")

# wndb(5) lexicographer file numbers used below (noun.*).
LEXNAMES = {3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact",
            7: "noun.attribute", 8: "noun.body", 9: "noun.cognition", 13: "noun.food",
            14: "noun.group", 15: "noun.location", 17: "noun.object", 18: "noun.person",
            19: "noun.phenomenon", 20: "noun.plant", 27: "noun.substance"}


@dataclass
class Synset:
    offset: int
    lexfile: int
    lemmas: list[str]
    hypernyms: list[int] = field(default_factory=list)
    hyponyms: list[int] = field(default_factory=list)
    gloss: str = ""

    @property
    def lexname(self) -> str:
        return LEXNAMES.get(self.lexfile, f"noun.{self.lexfile}")

    def names(self) -> list[str]:
        """Lemmas as label text: underscores to spaces, WordNet's ``(a)``-style markers off."""
        out = []
        for lemma in self.lemmas:
            name = lemma.split("(")[0].replace("_", " ").strip()
            if name and name not in out:
                out.append(name)
        return out


class WordNet:
    def __init__(self, root: str | Path = DEFAULT_ROOT):
        root = Path(root)
        data, index = root / "data.noun", root / "index.noun"
        if not data.is_file() or not index.is_file():
            raise FileNotFoundError(
                f"WordNet noun database not found in {root} (install Debian's wordnet-base)")
        self.synsets: dict[int, Synset] = {}
        for line in data.read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue  # licence header
            body, _, gloss = line.partition(" | ")
            f = body.split()
            w_cnt = int(f[3], 16)
            lemmas = [f[4 + 2 * i] for i in range(w_cnt)]
            p = 4 + 2 * w_cnt
            p_cnt = int(f[p])
            syn = Synset(int(f[0]), int(f[1]), lemmas, gloss=gloss.strip())
            for j in range(p_cnt):
                sym, off, pos = f[p + 1 + 4 * j: p + 4 + 4 * j]
                if pos != "n":
                    continue
                if sym in ("@", "@i"):
                    syn.hypernyms.append(int(off))
                elif sym in ("~", "~i"):
                    syn.hyponyms.append(int(off))
            self.synsets[syn.offset] = syn
        # lemma -> synset offsets in WordNet's sense order, and how often each lemma was
        # seen in WordNet's sense-tagged corpus (0: a rare word)
        self.senses: dict[str, list[int]] = {}
        self.tag_count: dict[str, int] = {}
        for line in index.read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue
            f = line.split()
            lemma, synset_cnt, p_cnt = f[0], int(f[2]), int(f[3])
            rest = f[4 + p_cnt:]
            self.tag_count[lemma] = int(rest[1])
            self.senses[lemma] = [int(x) for x in rest[2:2 + synset_cnt]]

    def synset(self, spec: str) -> Synset:
        """``"car.n.01"``: the lemma's n-th noun sense, as NLTK names synsets."""
        lemma, pos, num = spec.rsplit(".", 2)
        if pos != "n":
            raise ValueError(f"{spec}: only nouns are read")
        offsets = self.senses.get(lemma.lower())
        if not offsets or int(num) > len(offsets):
            raise KeyError(f"{spec}: no such WordNet noun sense")
        return self.synsets[offsets[int(num) - 1]]

    def hyponym_closure(self, syn: Synset, depth: int) -> list[Synset]:
        """``syn`` and its hyponyms down to ``depth`` levels, breadth first, no repeats."""
        return [self.synsets[o] for o in self.hyponym_depths(syn, depth)]

    def hyponym_depths(self, syn: Synset, depth: int) -> dict[int, int]:
        """offset -> hyponym steps below ``syn`` (breadth first, so the fewest), for ``syn``
        and its hyponyms down to ``depth`` levels, in breadth-first order."""
        out, frontier = {syn.offset: 0}, [syn]
        for d in range(1, depth + 1):
            nxt = []
            for s in frontier:
                for o in s.hyponyms:
                    if o not in out:
                        out[o] = d
                        nxt.append(self.synsets[o])
            frontier = nxt
        return out

    def is_common(self, name: str) -> bool:
        """Seen at least once in WordNet's sense-tagged corpus: an everyday word."""
        return self.tag_count.get(name.replace(" ", "_").lower(), 0) > 0
