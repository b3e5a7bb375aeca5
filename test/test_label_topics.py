"""Per-class mask topics are predictable: a function of the label alone, valid ROS names,
distinct for distinct labels, whatever the script or punctuation."""
import random

import pytest
from rclpy.exceptions import InvalidTopicNameException
from rclpy.validate_full_topic_name import validate_full_topic_name

from lgseg_ros.labels import MAX_LABEL_CHARS, sanitize_topic_token, topic_tokens, validate_labels

ODD = ["café", "cafe", "🚗", "🚲", "日本", "3d box", "c++", "t-shirt", "traffic-light", "a/b",
       "x" * MAX_LABEL_CHARS, "ü" * MAX_LABEL_CHARS, "---", "road."]


def test_plain_labels_keep_their_words():
    assert topic_tokens(["traffic light", "road", "sign symbol 2"]) == \
        ["traffic_light", "road", "sign_symbol_2"]
    assert sanitize_topic_token("Traffic_Light") == "traffic_light"


@pytest.mark.parametrize("label", ODD)
def test_every_token_is_a_valid_topic_name_part(label):
    token = sanitize_topic_token(label)
    try:
        validate_full_topic_name(f"/lgseg_node/class/{token}/mask")
    except InvalidTopicNameException as e:
        pytest.fail(f"{label!r} -> {token!r}: {e}")


def test_tokens_depend_on_the_label_only_and_differ_between_labels():
    labels = list(validate_labels(ODD))
    tokens = dict(zip(labels, topic_tokens(labels)))
    assert len(set(tokens.values())) == len(labels)
    # No emoji is "label_2" any more: the token does not depend on position or neighbours.
    rng = random.Random(3)
    for _ in range(20):
        subset = rng.sample(labels, rng.randint(1, len(labels)))
        assert topic_tokens(subset) == [tokens[name] for name in subset]
    assert tokens["cafe"] == "cafe" and tokens["café"].startswith("cafe_")
    assert tokens["🚗"] != tokens["🚲"] and tokens["🚗"].startswith("label_")
    assert tokens["3d box"].startswith("l_3d_box_")


def test_tokens_are_stable_across_runs():
    # Fixed hash (blake2b), not Python's salted hash(): these literals hold in every process.
    assert sanitize_topic_token("🚗") == "label_f82b790b"
    assert sanitize_topic_token("café") == "cafe_2d03c5d6"


def test_topic_tokens_do_not_depend_on_label_order():
    """Issue 20 item 14: the plain label 'cafe 2d03c5d6' took the topic of 'café' (whose
    hashed token is cafe_2d03c5d6) when it came first."""
    import itertools

    labels = ["café", "cafe 2d03c5d6", "cafe", "road"]
    tokens = {}
    for order in itertools.permutations(labels):
        for name, token in zip(order, topic_tokens(list(order))):
            assert tokens.setdefault(name, token) == token, (order, name, token)
    assert tokens["café"] == "cafe_2d03c5d6" and tokens["road"] == "road"
    assert len(set(tokens.values())) == len(labels)
