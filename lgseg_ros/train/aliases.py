"""Word aliases from WordNet: words a model was never trained on that name a trained concept.

    python -m lgseg_ros.train.aliases            # rebuild lgseg_ros/runtime/word_aliases.json
    python -m lgseg_ros.train.aliases --check    # fail if the shipped file is stale

The model reads a label only through its text embedding, and the text space does not
always put a word near the concept it names: "walker" lands nearest "hill" (0.51), although
WordNet lists it beside "pedestrian". So, besides the embedding search
(runtime/grounding.py), a label that WordNet says is a name or a kind of a trained concept
is read as that concept (runtime/aliases.py). The table is built here, once, and shipped:
robots and the node never read WordNet.

The rule (fixed before any evaluation with it; models/README.md reports what it gives):
- Seeds: for CamVid's 11 classes, the senses ``vocabulary.CLASS_SEEDS`` names (what SegNet's
  CamVid merges into each); for the concepts in ``SENSE_SEEDS``, the sense named there (see
  its comment). For every other concept of the shipped models, one noun sense
  of one of its trained names: among the senses a camera can see, the one whose hyponyms
  (to depth 2) contain the most of the concept's trained names; on a tie, food and people
  come last (``LEXNAME_PREFERENCE``), then WordNet's order (most frequent sense first).
- Aliases: each lemma of a seed and of its hyponyms (to ``DEPTH``) whose most frequent noun
  sense lies there ("palm" is first a hand, so no tree is called "palm"), and each synonym
  of a trained name that has a single noun sense, which names that name's concept. A lemma two
  concepts reach goes to the one whose seed is fewer hyponym steps above it; on a tie it
  names both, and a model that knows both does not read it by the table. Trained names, distractors, the near-miss list and
  ``vocabulary.AMBIGUOUS`` are never aliases; nor are proper names or words with digits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .vocabulary import AMBIGUOUS, CLASS_SEEDS, NEAR_MISS

ALIAS_FILE = Path(__file__).resolve().parents[1] / "runtime" / "word_aliases.json"
FORMAT = 1
DEPTH = 6
SEED_SUPPORT_DEPTH = 2
# Senses a camera can see. On a tie in support, made and natural things come before food
# and people ("fan" the device, not the admirer; "counter" the table, not the person who
# counts), then WordNet's own order, by corpus frequency.
LEXNAME_PREFERENCE = {"noun.artifact": 2, "noun.object": 2, "noun.plant": 2, "noun.animal": 2,
                      "noun.substance": 2, "noun.location": 2, "noun.Tops": 2, "noun.food": 1,
                      "noun.person": 0}
# Concepts whose automatic seed is another thing than the teacher's class of that name
# (ADE20K's barrel is a cask, not a gun barrel; its poster a placard, not a post horse): the
# sense whose gloss and lemmas match the class's own names. Chosen by reading the glosses of
# every automatic seed (session 11), not by any score.
SENSE_SEEDS = {
    "bar": "bar.n.02",                         # a counter for food or drink, not the barroom
    "barrel": "barrel.n.02",                   # barrel, cask
    "bulletin board": "bulletin_board.n.02",   # a notice board, not a computer system
    "canopy": "canopy.n.03",                   # a cloth roof, not a cockpit cover
    "column": "column.n.07",                   # a pillar, not a chromatography tube
    "cushion": "cushion.n.03",                 # a soft bag, not a shock absorber
    "earth": "earth.n.02",                     # earth, ground: soil, not the planet
    "hut": "hut.n.02",                         # hovel, hut, hutch, not an army hut
    "plate": "plate.n.04",                     # a dish, not home plate
    "poster": "poster.n.01",                   # poster, placard, not a post horse
    "radiator": "radiator.n.02",               # the heater, not any radiating object
    "runway": "runway.n.04",                   # the airstrip, not a railway track
    "sconce": "sconce.n.04",                   # a wall bracket for lights, not a shelter
    "sideboard": "sideboard.n.03",             # buffet, sideboard, not a wagon's board
    "toilet": "toilet.n.02",                   # the fixture, not the room
    "van": "van.n.05",                         # the truck, not a railway baggage car
}
MAX_ALIAS_CHARS = 40
# The shipped models whose concepts get aliases (their recorded vocabularies).
MODELS = ("models/lgseg_lite_minilm.safetensors", "models/lgseg_lite_minilm_rooms.safetensors")


def model_vocabularies(paths=MODELS) -> tuple[dict[str, list[str]], set[str]]:
    """Union of the checkpoints' concept -> trained names, and of their distractors."""
    from lgseg_ros.model.checkpoint import read_checkpoint_metadata
    from lgseg_ros.runtime.grounding import vocabulary_from_metadata

    repo = Path(__file__).resolve().parents[2]
    vocab: dict[str, list[str]] = {}
    distractors: set[str] = set()
    for p in paths:
        v, d = vocabulary_from_metadata(read_checkpoint_metadata(repo / p)[1])
        for c, names in v.items():
            vocab.setdefault(c, [])
            vocab[c] += [n for n in names if n not in vocab[c]]
        distractors.update(d)
    return vocab, distractors


def _key(name: str) -> str:
    return name.lower().replace(" ", "_")


def seed_senses(wn, concept: str, names: list[str]) -> list:
    """The concept's seed synsets (see the module's rule)."""
    if concept in CLASS_SEEDS:
        return [wn.synset(spec) for spec, _ in CLASS_SEEDS[concept]]
    if concept in SENSE_SEEDS:
        return [wn.synset(SENSE_SEEDS[concept])]
    wanted = {_key(n) for n in [concept, *names]}
    best, best_key = None, None
    for i, name in enumerate([concept, *names]):
        for rank, off in enumerate(wn.senses.get(_key(name), [])):
            syn = wn.synsets[off]
            if syn.lexname not in LEXNAME_PREFERENCE:
                continue
            lemmas = {_key(n) for s in wn.hyponym_closure(syn, SEED_SUPPORT_DEPTH) for n in s.names()}
            key = (len(wanted & lemmas), LEXNAME_PREFERENCE[syn.lexname], -rank, -i)
            if best_key is None or key > best_key:
                best, best_key = syn, key
    return [best] if best is not None else []


def build(wordnet_root: str | None = None, models=MODELS) -> dict:
    from .wordnet import DEFAULT_ROOT, WordNet

    wn = WordNet(wordnet_root or DEFAULT_ROOT)
    vocab, distractors = model_vocabularies(models)
    taken = {n.lower() for c, ns in vocab.items() for n in [c, *ns]}
    taken |= {d.lower() for d in distractors} | {n.lower() for n in NEAR_MISS} | AMBIGUOUS
    # offset -> {concept: steps below its nearest seed}
    reach: dict[int, dict[str, int]] = {}
    seeds_used = {}
    for concept, names in sorted(vocab.items()):
        seeds = seed_senses(wn, concept, names)
        seeds_used[concept] = [f"{s.names()[0] if s.names() else s.offset}:{s.offset}" for s in seeds]
        for seed in seeds:
            for off, d in wn.hyponym_depths(seed, DEPTH).items():
                prev = reach.setdefault(off, {}).get(concept)
                reach[off][concept] = d if prev is None else min(prev, d)
    # A synonym of a trained name means what that name means: "streetlight" is WordNet's
    # synonym of the pole name "street lamp", although "lamp" is a seed above it.
    # Only names with one noun sense: "post" (a pole name) is first a sentry's post.
    for c, names in vocab.items():
        for n in dict.fromkeys([c, *names]):
            senses = wn.senses.get(_key(n), [])
            if len(senses) == 1:
                reach.setdefault(senses[0], {})[c] = 0
    owner: dict[str, list[str]] = {}
    for off, concepts in reach.items():
        for lemma in wn.synsets[off].names():
            low = lemma.lower()
            if (low in taken or low in owner or len(low) > MAX_ALIAS_CHARS
                    or any(ch.isdigit() for ch in low) or lemma != low):
                continue
            first = wn.senses.get(_key(lemma), [None])[0]
            claims = reach.get(first, {})
            if not claims:
                continue      # the lemma means something else first
            nearest = min(claims.values())
            # ties are kept: a model that knows one of them reads the word as it; one that
            # knows several (a railing concept and a fence that holds railings) does not
            owner[low] = sorted(c for c, d in claims.items() if d == nearest)
    return {"format": FORMAT, "source": "WordNet 3.0 (Debian wordnet-base); rule in lgseg_ros/train/aliases.py",
            "depth": DEPTH, "seeds": seeds_used, "aliases": dict(sorted(owner.items()))}


def dumps(data: dict) -> str:
    """JSON with one alias a line: small, and a rebuild's diff reads word by word."""
    head = {k: v for k, v in data.items() if k != "aliases"}
    lines = [json.dumps(w, ensure_ascii=False) + ":" + json.dumps(cs, separators=(",", ":"))
             for w, cs in data["aliases"].items()]
    return (json.dumps(head, ensure_ascii=False)[:-1] + ',\n"aliases":{\n'
            + ",\n".join(lines) + "\n}}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lgseg_ros.train.aliases", description=__doc__.splitlines()[0])
    p.add_argument("--wordnet", default=None, help="WordNet dict folder (default /usr/share/wordnet)")
    p.add_argument("--check", action="store_true", help="fail if the shipped file differs from a rebuild")
    p.add_argument("--out", default=str(ALIAS_FILE))
    args = p.parse_args(argv)
    data = build(args.wordnet)
    text = dumps(data)
    if args.check:
        same = Path(args.out).is_file() and Path(args.out).read_text() == text
        print(f"{args.out}: {'up to date' if same else 'STALE: rebuild with python -m lgseg_ros.train.aliases'}")
        return 0 if same else 1
    Path(args.out).write_text(text)
    concepts = {c for cs in data["aliases"].values() for c in cs}
    print(f"wrote {len(data['aliases'])} aliases of {len(concepts)} concepts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
