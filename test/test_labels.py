"""The one label-set validation path (service, parameter, CLI all go through it)."""
import pytest

from lgseg_ros.labels import (MAX_LABEL_CHARS, LabelSetError, normalize_label, unlabeled_value,
                              validate_labels)


def test_normalisation_collapses_case_space_and_underscores():
    assert normalize_label("  Traffic__Light ") == "traffic light"
    assert normalize_label("ＣＡＲ") == "car"  # full-width letters (NFKC)


def test_valid_set_keeps_order():
    assert validate_labels(["Sky", "road", "sign symbol"]) == ("sky", "road", "sign symbol")


@pytest.mark.parametrize("labels, fragment", [
    ([], "empty"),
    ("road", "not a single string"),
    (["road", "Road "], "duplicate"),
    (["road", "  "], "blank"),
    (["road", 3], "not a string"),
    (["x" * (MAX_LABEL_CHARS + 1)], "maximum"),
    (["car\x00"], "control"),
    (None, "list of strings"),
])
def test_bad_sets_are_rejected_with_a_reason(labels, fragment):
    with pytest.raises(LabelSetError, match=fragment):
        validate_labels(labels)


def test_too_many_labels():
    with pytest.raises(LabelSetError, match="more than the maximum of 3"):
        validate_labels(["a", "b", "c", "d"], max_labels=3)


def test_unlabeled_value_switches_to_16_bit_above_254_labels():
    assert unlabeled_value(1) == 255
    assert unlabeled_value(254) == 255
    assert unlabeled_value(255) == 65535


# Topic tokens: test_label_topics.py.


def test_look_alike_labels_are_refused_as_duplicates():
    """Issue 20 item 14: 'car' and Cyrillic 'саr', or 'car' plus U+FE0F, were two labels."""
    import pytest

    from lgseg_ros.labels import LabelSetError, validate_labels

    with pytest.raises(LabelSetError, match=r"label 1 'саr' looks the same as label 0 'car' \(U\+0441"):
        validate_labels(["car", "саr"])
    with pytest.raises(LabelSetError, match="duplicate label 'car'"):
        validate_labels(["car", "car\ufe0f"])
    assert validate_labels(["саr"]) == ("саr",)  # alone, a Cyrillic word is a label like any
    assert validate_labels(["café", "cafe"]) == ("café", "cafe")  # different letters, kept apart


def test_shown_bounds_lists_of_huge_items_and_printable_escapes():
    """Probe round 6: 41 strings of 400 KB made a 64 MB refusal message."""
    from lgseg_ros.labels import printable, shown
    text = shown(["\x01" * 400_000] * 41)
    assert len(text) < 120 and text.endswith("(41 items)")
    assert len(shown(["x" * 1_000_000] * 3)) < 120
    assert shown(["a", "b"]) == "['a', 'b']"
    assert shown([[1] * 10 ** 6]) == "[<list of 1000000>]"
    # probe round 13: rclpy hands an array parameter over as array.array, and repr() of all
    # 2,000,000 doubles of one wrongly typed request stalled the executor for seconds
    from array import array
    big = shown(array("d", range(2_000_000)))
    assert len(big) < 80 and big.startswith("[0.0, 1.0") and big.endswith("(2000000 items)")
    assert shown(array("q", [1, 2, 3])) == "[1, 2, 3]"
    assert len(shown({"x" * 10 ** 6, "y"})) < 120 and len(shown(dict.fromkeys(range(10 ** 5)))) < 80
    safe = printable("ok \x1b]52;c;Zm9v\x07\u202e\r" + "y" * 500, limit=100)
    assert safe.isprintable() and "\\x1b" in safe and safe.endswith("(517 characters)")


def test_escapes_do_not_stretch_the_cap():
    """Probe round 8: the cut came before the escaping, and U+E0001 escapes to 10
    characters, so shown() gave 423 characters for a 40 cap and printable() 2,021 for 200."""
    from lgseg_ros.labels import printable, shown
    tag = "\U000e0001" * 1000
    assert len(shown(tag)) < 80 and shown(tag).endswith("(1000 characters)")
    assert len(printable(tag, 200)) < 230 and len(printable(tag, 400)) < 430
    assert shown("x" * 50) == repr("x" * 40) + "... (50 characters)"


def test_normalising_twice_changes_nothing():
    """Audit round 15: NFKC then casefold was not stable ('ß' + U+0301 -> 'ss' + U+0301, which
    a second pass composed to 'sś'). Labels are normalised again at configure and in topic
    names, so 'ß\u0301' and 'sś' passed as two labels at start-up, then shared one mask
    topic, and a set stored while unconfigured made every configure fail. Every code point
    that is not category C, alone and before each combining mark that composes with letters."""
    import sys
    import unicodedata

    # with a variation selector between letter and mark too: stripped after NFKC, it had
    # kept the pair apart until a second pass ('a' U+FE0F U+0301 -> 'á'; session-15 review)
    marks = ("", "\u0301", "\u0308", "\u0345", "\u0327", "\ufe0f\u0301")
    unstable = []
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if unicodedata.category(c).startswith("C"):
            continue
        for m in marks if cp < 0x3000 else ("",):   # the compositions live below U+3000
            once = normalize_label(c + m)
            if normalize_label(once) != once:
                unstable.append(c + m)
    assert not unstable, [f"U+{ord(s[0]):04X}{s[1:]!a}" for s in unstable[:10]]


def test_a_label_that_only_normalises_alike_is_a_duplicate_from_the_first_pass():
    with pytest.raises(LabelSetError, match="duplicate label 'sś' at positions 1 and 2"):
        validate_labels(["road", "ß\u0301", "s\u015b"])


@pytest.mark.parametrize("label, code", [
    ("car\u3164", "U+3164"), ("\u3164", "U+3164"), ("\u2800", "U+2800"),
    ("door\u115f", "U+115F"), ("ta\u034fble", "U+034F"), ("\uffa0", "U+FFA0"),
])
def test_letters_drawn_as_nothing_are_refused_naming_the_character(label, code):
    """Audit round 15: 'car' + U+3164 (a Hangul filler, category Lo) looked like 'car' and was
    encoded as an unknown word (grounded to 'sign' at 0.37); U+3164 and U+2800 alone made two
    labels that look blank and alike."""
    import re

    with pytest.raises(LabelSetError, match=f"label 1 .*contains {re.escape(code)}, a character drawn as nothing"):
        validate_labels(["road", label])
