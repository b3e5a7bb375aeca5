"""Concepts: class names merged by meaning across label sources, and how they nest.

Every source names its classes its own way: ADE20K's "person;individual;someone",
Cityscapes' "person", CamVid's "pedestrian". Training needs one name per meaning, so that
a pixel is the same target whichever source labelled it, and one list of words per
meaning, so that the vocabulary recorded in the checkpoint (what grounding compares a
user's word with) holds every name the model was trained under.

Nesting: CamVid's human labels are coarse ("building"), a teacher can split them finer
("window" inside "building"). A class of a folder dataset written as a chain
``"building > window"`` is both: asked for "window" its pixels are "window", asked for
"building" alone they are "building", asked for neither they are "none"
(``train/multisource.py``). ``NEST_RULES`` lists which teacher concept may refine which
CamVid class; a teacher's concept outside its rule's parent (a "window" the teacher sees
on a CamVid "road" pixel) is dropped and the human label kept.
"""
from __future__ import annotations

from typing import Mapping, Sequence

CHAIN_SEP = " > "

# ADE20K's 150 classes (teacher label-file names, which are cut at the first word) -> the
# concept name users would type; names merged with CamVid's take CamVid's name. None: not
# trained (a brand name is not a thing to segment).
ADE20K_TO_CONCEPT: dict[str, str | None] = {
    "wall": "wall", "building": "building", "sky": "sky", "floor": "floor", "tree": "tree",
    "ceiling": "ceiling", "road": "road", "bed": "bed", "windowpane": "window",
    "grass": "grass", "cabinet": "cabinet", "sidewalk": "pavement", "person": "pedestrian",
    "earth": "earth", "door": "door", "table": "table", "mountain": "mountain",
    "plant": "plant", "curtain": "curtain", "chair": "chair", "car": "car", "water": "water",
    "painting": "painting", "sofa": "sofa", "shelf": "shelf", "house": "building",
    "sea": "sea", "mirror": "mirror", "rug": "rug", "field": "field", "armchair": "armchair",
    "seat": "seat", "fence": "fence", "desk": "desk", "rock": "rock", "wardrobe": "wardrobe",
    "lamp": "lamp", "bathtub": "bathtub", "railing": "railing", "cushion": "cushion",
    "base": "pedestal", "box": "box", "column": "column", "signboard": "sign symbol",
    "chest": "chest of drawers", "counter": "counter", "sand": "sand", "sink": "sink",
    "skyscraper": "building", "fireplace": "fireplace", "refrigerator": "refrigerator",
    "grandstand": "grandstand", "path": "path", "stairs": "stairs", "runway": "runway",
    "case": "display case", "pool": "pool table", "pillow": "pillow",
    "screen": "screen door", "stairway": "stairway", "river": "river", "bridge": "bridge",
    "bookcase": "bookcase", "blind": "window blind", "coffee": "coffee table",
    "toilet": "toilet", "flower": "flower", "book": "book", "hill": "hill", "bench": "bench",
    "countertop": "countertop", "stove": "stove", "palm": "tree", "kitchen": "kitchen island",
    "computer": "computer", "swivel": "swivel chair", "boat": "boat", "bar": "bar",
    "arcade": "arcade machine", "hovel": "hut", "bus": "bus", "towel": "towel",
    "light": "light", "truck": "truck", "tower": "tower", "chandelier": "chandelier",
    "awning": "awning", "streetlight": "street light", "booth": "booth",
    "television": "television", "airplane": "airplane", "dirt": "dirt track",
    "apparel": "clothes", "pole": "pole", "land": "ground", "bannister": "banister",
    "escalator": "escalator", "ottoman": "ottoman", "bottle": "bottle", "buffet": "sideboard",
    "poster": "poster", "stage": "stage", "van": "van", "ship": "ship",
    "fountain": "fountain", "conveyer": "conveyor belt", "canopy": "canopy",
    "washer": "washing machine", "plaything": "toy", "swimming": "swimming pool",
    "stool": "stool", "barrel": "barrel", "basket": "basket", "waterfall": "waterfall",
    "tent": "tent", "bag": "bag", "minibike": "motorcycle", "cradle": "cradle",
    "oven": "oven", "ball": "ball", "food": "food", "step": "step", "tank": "storage tank",
    "trade": None, "microwave": "microwave", "pot": "flowerpot", "animal": "animal",
    "bicycle": "bicycle", "lake": "lake", "dishwasher": "dishwasher",
    "crt": "crt screen", "blanket": "blanket", "sculpture": "sculpture",
    "hood": "exhaust hood", "sconce": "sconce", "vase": "vase",
    "traffic": "traffic light", "tray": "tray", "ashcan": "trash can", "fan": "fan",
    "pier": "pier", "plate": "plate", "monitor": "monitor", "bulletin": "bulletin board",
    "shower": "shower", "radiator": "radiator", "glass": "drinking glass", "clock": "clock",
    "flag": "flag",
}
# ADE's second "screen" line (131) is a projection screen; the first (59) a screen door.
ADE20K_DUPLICATE_NAMES = {131: "projection screen"}

CITYSCAPES_TO_CONCEPT: dict[str, str | None] = {
    "road": "road", "sidewalk": "pavement", "building": "building", "wall": "wall",
    "fence": "fence", "pole": "pole", "traffic light": "traffic light",
    "traffic sign": "sign symbol", "vegetation": "tree", "terrain": "grass", "sky": "sky",
    "person": "pedestrian", "rider": "bicyclist", "car": "car", "truck": "truck",
    "bus": "bus", "train": "train", "motorcycle": "motorcycle", "bicycle": "bicycle",
}

VOC_TO_CONCEPT: dict[str, str | None] = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair",
    "cow": "cow", "diningtable": "table", "dog": "dog", "horse": "horse",
    "motorbike": "motorcycle", "person": "pedestrian", "pottedplant": "plant",
    "sheep": "sheep", "sofa": "sofa", "train": "train", "tvmonitor": "monitor",
}

TEACHER_CONCEPTS: dict[str, Mapping[str, str | None]] = {
    "ade20k_labels.txt": ADE20K_TO_CONCEPT,
    "cityscapes_labels.txt": CITYSCAPES_TO_CONCEPT,
    "pascal_voc_labels.txt": VOC_TO_CONCEPT,
}

# Names each concept is also trained under (besides its own and, for CamVid's classes,
# the shipped WordNet vocabulary), chosen as the words a robot user would type for it.
CONCEPT_NAMES: dict[str, tuple[str, ...]] = {
    # not "human": it is the held-out name for pedestrian (openvocab.HELDOUT_RENAMES); the
    # stage-4 model was trained with it by mistake, and its card says so
    "pedestrian": ("person", "people"),
    "floor": ("flooring", "ground floor"),
    "window": ("windowpane", "window pane"),
    "door": ("doorway", "double door"),
    "table": ("dining table", "kitchen table"),
    "chair": ("chairs",),
    "sofa": ("couch",),
    "cabinet": ("cupboard", "kitchen cabinet"),
    "toilet": ("toilet bowl",),
    "sink": ("washbasin",),
    "rug": ("carpet",),
    "painting": ("picture",),
    "plant": ("potted plant", "houseplant"),
    "refrigerator": ("fridge",),
    "television": ("tv",),
    "monitor": ("computer screen",),
    "trash can": ("garbage can", "bin"),
    "street light": ("street lamp",),
    "traffic light": ("traffic signal",),
    "grass": ("lawn",),
    "motorcycle": ("motorbike",),
    "road marking": ("lane marking", "road markings"),
    "stairs": ("staircase", "steps"),
    "bookcase": ("bookshelf",),
}

# Which teacher concept may refine which CamVid class (child -> allowed parents).
NEST_RULES: dict[str, tuple[str, ...]] = {
    "wall": ("building",), "window": ("building",), "door": ("building",),
    "awning": ("building",), "column": ("building", "pole"),
    "bus": ("car",), "truck": ("car",), "van": ("car",), "train": ("car",),
    "traffic light": ("sign symbol", "pole"),
    "street light": ("pole",),
    "grass": ("tree", "pavement"), "plant": ("tree",), "flower": ("tree",),
    "bicycle": ("bicyclist",), "motorcycle": ("bicyclist", "car"),
    "railing": ("fence",),
    "road marking": ("road",),
}


def chain(name: str) -> list[str]:
    """``"building > window"`` -> ``["building", "window"]`` (coarse to fine)."""
    return [p.strip() for p in name.split(CHAIN_SEP.strip())] if CHAIN_SEP.strip() in name \
        else [name.strip()]


def chain_name(parts: Sequence[str]) -> str:
    return CHAIN_SEP.join(parts)


def teacher_concepts(labels_file: str, class_names: Sequence[str]) -> list[str | None]:
    """Concept for each teacher class id (None: not trained). Unknown label files keep the
    teacher's own first name per class."""
    table = TEACHER_CONCEPTS.get(labels_file)
    out = []
    for i, raw in enumerate(class_names):
        first = raw.split(";")[0].split(",")[0].strip()
        if table is None:
            out.append(first or None)
        elif labels_file == "ade20k_labels.txt" and (i + 1) in ADE20K_DUPLICATE_NAMES:
            out.append(ADE20K_DUPLICATE_NAMES[i + 1])
        else:
            out.append(table.get(first, first or None))
    return out


def concept_vocabulary(concepts: Sequence[str],
                       base: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Concept -> every name it is trained under (its own first)."""
    base = base or {}
    return {c: list(dict.fromkeys([c, *base.get(c, ()), *CONCEPT_NAMES.get(c, ())]))
            for c in concepts}
