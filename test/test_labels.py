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
