"""The label vocabulary that training draws names from, built once from WordNet.

    python -m lgseg_ros.train.vocabulary            # rebuild lgseg_ros/train/camvid_vocab.json
    python -m lgseg_ros.train.vocabulary --check    # fail if the shipped file is stale

The JSON file is shipped, so training and robots never need WordNet. It holds:

- ``classes``: for each CamVid class, the names training may call it by: hand-picked
  everyday names plus the lemmas of WordNet synsets for what SegNet's CamVid merges into
  that class (``wall`` and ``bridge`` are "building", ``truck`` and ``bus`` are "car",
  ``traffic light`` is "sign symbol", ``motorcyclist`` is "bicyclist") and their common
  hyponyms;
- ``distractors``: everyday nouns for things a street scene does not contain (food,
  furniture, instruments, tableware, appliances, ...), given to the model as extra labels
  that no pixel belongs to, so it learns that a word it was handed need not take pixels;
- ``heldout``: one name per class that shares no word with anything above: the
  evaluation's unseen-name test;
- ``near_miss``: names of things that appear in street scenes but that CamVid does not
  label; never trained on; the evaluation checks that they take (almost) no pixels.

No name in ``classes`` or ``distractors`` shares a word with a ``heldout`` name
(``shares_word``), and none is a ``near_miss`` name: that is what makes those lists tests.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

VOCAB_FILE = Path(__file__).with_name("camvid_vocab.json")
FORMAT = 1

# (WordNet sense, hyponym depth) per class; what SegNet's 11-class CamVid merges.
CLASS_SEEDS: dict[str, list[tuple[str, int]]] = {
    "sky": [("sky.n.01", 1)],
    "building": [("building.n.01", 1), ("house.n.01", 1), ("wall.n.01", 0),
                 ("bridge.n.01", 0), ("tunnel.n.01", 0)],
    "pole": [("pole.n.01", 1), ("lamppost.n.01", 0), ("post.n.04", 0), ("column.n.07", 0)],
    "road": [("road.n.01", 1), ("street.n.01", 1)],
    "pavement": [("sidewalk.n.01", 0), ("curb.n.01", 0)],
    "tree": [("tree.n.01", 1), ("vegetation.n.01", 0), ("shrub.n.01", 0)],
    "sign symbol": [("street_sign.n.01", 1), ("traffic_light.n.01", 0), ("signboard.n.01", 0)],
    "fence": [("fence.n.01", 1), ("railing.n.01", 0)],
    "car": [("car.n.01", 1), ("truck.n.01", 1), ("bus.n.01", 0), ("van.n.05", 0)],
    "pedestrian": [("pedestrian.n.01", 1), ("person.n.01", 0), ("man.n.01", 0),
                   ("woman.n.01", 0), ("child.n.01", 0)],
    "bicyclist": [("cyclist.n.01", 1), ("motorcyclist.n.01", 0)],
}
# Everyday names WordNet does not list as lemmas (plurals, phrases people type).
HAND_NAMES: dict[str, list[str]] = {
    "sky": ["the sky", "blue sky", "cloudy sky"],
    "building": ["buildings", "house", "houses", "shop front", "office building"],
    "pole": ["lamp post", "post", "poles", "street lamp", "signal pole"],
    "road": ["street", "roadway", "the road", "lane", "driving lane"],
    "pavement": ["sidewalk", "footpath", "pavements", "kerb"],
    "tree": ["trees", "vegetation", "bushes", "hedge", "plants"],
    "sign symbol": ["traffic sign", "road sign", "traffic signal", "sign", "street sign"],
    "fence": ["railing", "barrier", "fences", "railings"],
    "car": ["automobile", "vehicle", "cars", "truck", "van", "bus"],
    "pedestrian": ["person", "people", "man", "woman", "child", "walking person"],
    "bicyclist": ["cyclist", "bicycle rider", "person on a bicycle", "motorcyclist",
                  "bicycle"],
}
# Lemmas that mean something else first (MiniLM would read them so).
AMBIGUOUS = {"machine", "wheel", "wheeler", "cycle", "soul", "mortal", "coach", "route",
             "span", "rail", "footer", "jitney", "charabanc", "individual", "someone",
             "somebody", "flora", "botany", "side", "kid", "nipper", "tiddler", "tike",
             "tyke", "youngster", "fry", "shaver", "small fry", "minor", "baby", "adult",
             "grownup", "gent", "boy", "girl", "female", "male", "board", "post",
             # names people would not give a street-scene class, or that name outdoor
             # things in the distractor subtrees
             "brothel", "house of prostitution", "bawdyhouse", "morgue", "dead room",
             "feedlot", "soddy", "gambling house", "aviary", "packinghouse", "hall of fame",
             "wall street", "broadway", "shortcut", "nondriver", "blue air", "mound",
             "booth", "counter", "buck", "afghan", "pin", "seed", "seedpod", "produce",
             "greens", "nut", "diamond", "home plate", "second base", "third base",
             "cooler", "vintage", "wheelchair", "horizontal bar", "parallel bars",
             "spirits", "bitters", "pemmican", "toddy", "prie-dieu", "escritoire",
             "stickpin", "chaise", "buffet", "currant", "citron"}
HELDOUT: dict[str, str] = {
    "sky": "clouds", "building": "architecture", "pole": "streetlight", "road": "asphalt",
    "pavement": "walkway", "tree": "foliage", "sign symbol": "signboard",
    "fence": "fencing", "car": "sedan", "pedestrian": "human", "bicyclist": "bike",
}
NEAR_MISS = ["fire hydrant", "traffic cone", "trash can", "bench", "mailbox", "umbrella",
             "suitcase", "parking meter"]
# Subtrees whose everyday nouns are absent from street scenes (no animals: CamVid counts
# them as "pedestrian"; no clothing: people wear it).
DISTRACTOR_ROOTS = ["food.n.02", "fruit.n.01", "beverage.n.01", "furniture.n.01",
                    "musical_instrument.n.01", "kitchen_utensil.n.01", "tableware.n.01",
                    "home_appliance.n.01", "sports_equipment.n.01", "jewelry.n.01",
                    "toy.n.01", "writing_implement.n.01", "bedclothes.n.01"]


def words(name: str) -> set[str]:
    """Lower-case word set with a plural ``s`` folded, for 'shares no word' checks."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", name.lower()):
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def shares_word(a: str, b: str) -> bool:
    return bool(words(a) & words(b))


def build(wordnet_root: str | None = None) -> dict:
    from .wordnet import DEFAULT_ROOT, WordNet
    wn = WordNet(wordnet_root or DEFAULT_ROOT)
    def keep(name: str) -> bool:
        # held-out names: no shared word at all; near misses: not the name itself (a
        # "traffic sign" must stay trainable although "traffic cone" is a near miss)
        return (name.lower() not in AMBIGUOUS and len(name) <= 40
                and name.lower() not in NEAR_MISS
                and not any(shares_word(name, h) for h in HELDOUT.values()))

    def wordnet_names(specs: list[tuple[str, int]]) -> list[str]:
        """Lemmas of the seeds and their hyponyms whose most frequent sense is one of
        them ("palm" is first a hand, "locust" an insect: neither names a tree to a
        reader), and that people use (seen in WordNet's tagged corpus)."""
        synsets = [s for spec, depth in specs for s in wn.hyponym_closure(wn.synset(spec), depth)]
        inside = {s.offset for s in synsets}
        out = []
        for syn in synsets:
            for n in syn.names():
                first = wn.senses.get(n.replace(" ", "_").lower(), [None])[0]
                if first in inside and wn.is_common(n):
                    out.append(n.lower())
        return out

    classes = {}
    for cls, seeds in CLASS_SEEDS.items():
        names = [cls] + HAND_NAMES[cls] + wordnet_names(seeds)
        classes[cls] = [n for n in dict.fromkeys(names) if n == cls or keep(n)]
    # a name two classes claim ("wall": building and fence) teaches nothing: drop it
    owners: dict[str, int] = {}
    for ns in classes.values():
        for n in ns:
            owners[n] = owners.get(n, 0) + 1
    classes = {c: [n for n in ns if n == c or owners[n] == 1] for c, ns in classes.items()}
    class_names = {n for ns in classes.values() for n in ns}
    distractors = [n for n in wordnet_names([(r, 3) for r in DISTRACTOR_ROOTS])
                   if keep(n) and n not in class_names
                   and not any(shares_word(n, c) for c in class_names)]
    return {"format": FORMAT, "source": "WordNet 3.0 (Debian wordnet-base) + hand-picked names",
            "classes": classes, "distractors": sorted(set(distractors)),
            "heldout": dict(HELDOUT), "near_miss": list(NEAR_MISS)}


@lru_cache(maxsize=1)
def load() -> dict:
    data = json.loads(VOCAB_FILE.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{VOCAB_FILE}: format {data.get('format')}, expected {FORMAT}")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lgseg_ros.train.vocabulary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wordnet", help="WordNet dict folder (default /usr/share/wordnet)")
    p.add_argument("--out", default=str(VOCAB_FILE))
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = p.parse_args(argv)
    data = build(args.wordnet)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = Path(args.out).read_text() == text
        print(f"{args.out}: {'up to date' if same else 'STALE: rebuild it'}")
        return 0 if same else 1
    Path(args.out).write_text(text)
    n = sum(len(v) for v in data["classes"].values())
    print(f"wrote {args.out}: {n} class names, {len(data['distractors'])} distractors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
