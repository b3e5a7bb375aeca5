"""runtime/routing.py: the default Segmenter runs a set of street classes on the street model
and a set with any other word on the rooms model, as each model alone would."""
import time

import numpy as np
import pytest

from lgseg_ros.runtime.routing import rooms_checkpoint_path
from lgseg_ros.runtime.segmenter import Segmenter, default_checkpoint_path

pytestmark = pytest.mark.skipif(rooms_checkpoint_path() is None or default_checkpoint_path() is None,
                                reason="the shipped models are not installed")

STREET_SETS = [["road", "car", "person", "sky"], ["galaxy", "road"], ["bicyclist"]]
ROOMS_SETS = [["floor", "door", "wall"], ["car", "bus"], ["building", "wall"], ["kitchen sink"]]


@pytest.fixture(scope="module")
def routed():
    return Segmenter(backend="onnxruntime", precision="fp32")


@pytest.fixture(scope="module")
def frame():
    import cv2
    from lgseg_ros.resources import package_path

    bgr = cv2.imread(str(package_path("demo/frames/0016E5_08109.jpg")))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_street_sets_stay_on_the_street_model_and_the_rooms_model_loads_only_when_needed():
    seg = Segmenter(backend="onnxruntime", precision="fp32")
    assert seg.routes
    for labels in STREET_SETS:
        ls = seg.prepare_labels(labels)
        assert ls.model == "lgseg_lite_minilm.safetensors", (labels, ls.route)
    assert seg._rooms is None, "a street-only session paid for the rooms model"
    ls = seg.prepare_labels(["floor", "door"])
    assert ls.model == "lgseg_lite_minilm_rooms.safetensors"
    assert "'floor' (floor)" in ls.route and "'door' (door)" in ls.route


@pytest.mark.parametrize("labels", ROOMS_SETS)
def test_a_set_with_a_word_the_street_model_has_no_class_for_runs_on_the_rooms_model(routed, labels):
    ls = routed.prepare_labels(labels)
    assert ls.model == "lgseg_lite_minilm_rooms.safetensors", ls.route
    assert ls.route.startswith("rooms model: ")


@pytest.mark.parametrize("labels", [STREET_SETS[0], ROOMS_SETS[0], ROOMS_SETS[1]])
def test_routed_masks_are_those_of_the_model_that_serves_the_set(routed, frame, labels):
    ls = routed.prepare_labels(labels)
    alone = Segmenter(checkpoint=default_checkpoint_path() if ls.model == "lgseg_lite_minilm.safetensors"
                      else rooms_checkpoint_path(), backend="onnxruntime", precision="fp32")
    assert not alone.routes, "a named checkpoint must answer every set itself"
    ref = alone.segment(frame, alone.prepare_labels(labels))
    out = routed.segment(frame, ls)
    np.testing.assert_array_equal(out.ids, ref.ids)
    # the grounding report is the serving model's: its vocabulary, its classes
    assert [g.nearest_class for g in ls.grounding] == \
        [g.nearest_class for g in alone.prepare_labels(labels).grounding]


def test_the_rooms_model_knows_room_words_the_street_model_reads_as_unknown(routed):
    street = Segmenter(backend="onnxruntime", precision="fp32", route=False)
    assert not street.routes
    words = ["floor", "door", "chair"]
    assert not any(g.well_grounded for g in street.prepare_labels(words).grounding)
    assert all(g.well_grounded for g in routed.prepare_labels(words).grounding)


def test_switching_between_models_frame_by_frame_keeps_each_sets_masks(routed, frame):
    street, rooms = routed.prepare_labels(STREET_SETS[0]), routed.prepare_labels(ROOMS_SETS[0])
    first = {id(s): routed.segment(frame, s).ids for s in (street, rooms)}
    for s in (rooms, street, rooms, street):
        np.testing.assert_array_equal(routed.segment(frame, s).ids, first[id(s)])


def test_street_parts_are_the_nesting_training_used():
    """STREET_PARTS must say what the rooms model was trained on (train/concepts.NEST_RULES)."""
    from lgseg_ros.runtime.routing import STREET_PARTS
    from lgseg_ros.train.concepts import NEST_RULES

    for concept, parents in STREET_PARTS.items():
        assert set(parents) == set(NEST_RULES[concept]), concept


@pytest.mark.parametrize("labels, rooms", [
    # a renamed street class stays on the street model...
    (["clouds", "road", "bike"], False), (["streetlight", "car"], False),
    # ...the part beside its class asks for the difference
    (["bicyclist", "bicycle"], True), (["pole", "street light"], True), (["road", "road marking"], True),
    # ...and asked alone it means the thing itself, which only the rooms model knows
    (["traffic light"], True), (["bus"], True), (["bike"], True),
    # a weak match to a room concept ('graffiti' is nearest 'painting' at about 0.54) moves
    # nothing; 'walker' (nearest 'hill') is WordNet's pedestrian now (runtime/aliases.py)
    (["graffiti", "road"], False), (["walker", "road"], False),
    # walls, windows and doors are room concepts first
    (["wall", "door"], True), (["window"], True),
])
def test_street_parts_and_weak_matches_keep_street_sets_on_the_street_model(routed, labels, rooms):
    ls = routed.prepare_labels(labels)
    assert (ls.model == "lgseg_lite_minilm_rooms.safetensors") == rooms, ls.route


def test_if_the_rooms_model_cannot_load_the_street_model_answers_instead_of_refusing(tmp_path):
    seg = Segmenter(backend="onnxruntime", precision="fp32")
    broken = tmp_path / "rooms.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")   # a header and no tensors
    seg._rooms_args["checkpoint"] = str(broken)    # as if its artefacts were missing
    ls = seg.prepare_labels(["floor", "door"])
    assert ls.model == "lgseg_lite_minilm.safetensors" and not seg.routes
    assert seg.segment(np.zeros((48, 64, 3), np.uint8), ls).ids.shape == (48, 64)


def test_the_model_the_sets_moved_away_from_gives_back_its_large_set(frame, monkeypatch):
    """ONNX Runtime shrinks a session's arena only at the end of one of its runs, so with
    two models the idle one kept what its largest set needed: a 250-word street set, then
    "floor, door, wall" on the rooms model, held about 1.08 GB instead of 0.3 (probe round
    14). A frame after a switch now runs the idle model once with one label and the
    shrinkage option -- but only once it has been idle IDLE_RELEASE_AFTER_S: released on
    every switch, sets alternating between the models paid that run and the arena's regrowth
    each time (256 words at 10 Hz: masks 4.8 -> 2.8 a second, +400 MB at peak, audit round
    15). Each model's own set still gives the same masks afterwards."""
    from lgseg_ros.runtime import segmenter as segmenter_module
    from lgseg_ros.runtime.segmenter import IDLE_RELEASE_ABOVE_K

    monkeypatch.setattr(segmenter_module, "IDLE_RELEASE_AFTER_S", 0.5)
    seg = Segmenter(backend="onnxruntime", precision="fp32")
    big = seg.prepare_labels([f"thing {i}" for i in range(IDLE_RELEASE_ABOVE_K + 8)] + ["road"])
    assert big.model == "lgseg_lite_minilm.safetensors", big.route
    rooms = seg.prepare_labels(["floor", "door", "wall"])
    before = seg.segment(frame, big).ids.copy()
    assert seg._peak_k == len(big)
    seg.segment(frame, rooms)
    assert seg._peak_k == len(big), "a quick switch released the model the next set may need"
    time.sleep(0.6)
    seg.segment(frame, rooms)
    assert seg._peak_k == 1, "the idle street model kept its large set's memory"
    assert np.array_equal(seg.segment(frame, big).ids, before)
    assert seg._rooms._peak_k == 3   # 3 labels: under the line, nothing to give back


def test_a_rooms_model_that_fails_to_load_once_is_tried_again(monkeypatch):
    """ONNX Runtime's own errors are plain Exceptions, which the rooms model's fallback did
    not catch (room-word sets were refused, every time), and any failure it did catch turned
    routing off until the next configure, a passing one too (a full disk, a memory spike):
    room words were then answered "none" by the street model (probe round 14). Now a failure
    that may pass serves that set on the street model and the rooms model is tried again
    after ROOMS_RETRY_S."""
    from lgseg_ros.runtime import ort_session

    seg = Segmenter(backend="onnxruntime", precision="fp32")
    seg.prepare_labels(["road", "car"])
    real = ort_session.session_from_bytes

    def fails(*args, **kwargs):
        raise Exception("injected: onnxruntime_pybind11_state.Fail bad_alloc")

    monkeypatch.setattr(ort_session, "session_from_bytes", fails)
    ls = seg.prepare_labels(["floor", "door"])
    assert ls.model == "lgseg_lite_minilm.safetensors" and seg.routes
    monkeypatch.setattr(ort_session, "session_from_bytes", real)
    assert seg.prepare_labels(["floor", "wall"]).model == "lgseg_lite_minilm.safetensors"  # waits
    seg._rooms_retry_at = 0.0          # as if ROOMS_RETRY_S had passed
    assert seg.prepare_labels(["floor", "door"]).model == "lgseg_lite_minilm_rooms.safetensors"


def test_which_rooms_load_failures_turn_routing_off():
    """Only a rooms model that cannot load however often it is tried turns routing off; an
    export that failed (a full disk while it wrote) is tried again."""
    from lgseg_ros.model.checkpoint import CheckpointError
    from lgseg_ros.runtime.artefacts import ArtefactError
    from lgseg_ros.runtime.segmenter import _lasting_failure

    assert _lasting_failure(ArtefactError("no frame-path ONNX ..., and exporting one needs torch"))
    assert _lasting_failure(CheckpointError("truncated")) and _lasting_failure(FileNotFoundError())
    assert not _lasting_failure(ArtefactError("exporting x for 384x480 fp32 failed (exit 1): OSError"))
    assert not _lasting_failure(OSError(28, "No space left on device"))
    assert not _lasting_failure(Exception("onnxruntime_pybind11_state.Fail"))
    # a checkpoint replaced while it was read is read whole next time: a passing failure,
    # though a CheckpointError like a truncated one
    from lgseg_ros.runtime.artefacts import CheckpointChanged

    assert isinstance(CheckpointChanged("x"), CheckpointError)
    assert not _lasting_failure(CheckpointChanged("x changed while it was read; load it again"))
    # backend auto wraps its last candidate's failure: the cause decides
    for cause, lasting in ((ArtefactError("... exporting one needs torch"), True),
                           (OSError(28, "No space left on device"), False)):
        try:
            raise RuntimeError("backend auto (device='cpu'): no backend could start") from cause
        except RuntimeError as wrapped:
            assert _lasting_failure(wrapped) is lasting


def test_a_rooms_checkpoint_replaced_while_it_is_read_is_tried_again(tmp_path, monkeypatch):
    """The hardening that reads a checkpoint's header and sha256 in one read refuses a file
    changed meanwhile with a CheckpointError, which turned routing off until the next
    configure like a truncated file: a deploy replacing the rooms model during a routed load
    left room words to the street model for good. That refusal is CheckpointChanged now, a
    passing failure: the street model answers that set, the rooms model is tried again after
    ROOMS_RETRY_S and loads."""
    import shutil

    from lgseg_ros.model import checkpoint

    rooms = tmp_path / "rooms.safetensors"
    shutil.copyfile(rooms_checkpoint_path(), rooms)
    seg = Segmenter(backend="onnxruntime", precision="fp32")
    seg.prepare_labels(["road", "car"])
    seg._rooms_args["checkpoint"] = str(rooms)      # a copy this test may replace
    real = checkpoint._metadata_of

    def deployed_meanwhile(header, where):          # a deploy writes over it while it is read
        with open(rooms, "ab") as f:
            f.write(b"\0")
        return real(header, where)

    monkeypatch.setattr(checkpoint, "_metadata_of", deployed_meanwhile)
    ls = seg.prepare_labels(["floor", "door"])
    assert ls.model == "lgseg_lite_minilm.safetensors"
    assert seg.routes, "a checkpoint replaced while it was read turned routing off"
    assert seg._rooms_retry_at > time.monotonic()
    monkeypatch.setattr(checkpoint, "_metadata_of", real)
    shutil.copyfile(rooms_checkpoint_path(), rooms)  # the deploy done
    seg._rooms_retry_at = 0.0                        # as if ROOMS_RETRY_S had passed
    assert seg.prepare_labels(["floor", "door"]).model == "rooms.safetensors"


def test_a_rooms_file_replaced_after_configure_routes_by_the_file_loaded(tmp_path, caplog):
    """Audit round 20: the router took the rooms file's vocabulary at configure and the rooms
    model was loaded from the file on the first set that needed it, maybe hours later; a
    deploy in between routed sets by the old file's concepts and answered them with the new
    one's. The routes are now rebuilt from the file loaded, and the set that loaded it is
    routed again by them."""
    import logging
    import shutil

    from lgseg_ros.runtime.segmenter import default_checkpoint_path

    rooms = tmp_path / "rooms.safetensors"
    shutil.copyfile(rooms_checkpoint_path(), rooms)
    seg = Segmenter(backend="onnxruntime", precision="fp32")
    seg._rooms_args["checkpoint"] = str(rooms)
    # The "deploy": a file that knows only CamVid's 11 classes, so "floor" is nothing the
    # new file routes away from the street model.
    shutil.copyfile(default_checkpoint_path(), rooms)
    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.segmenter"):
        # The set whose load finds the change is routed again by the file loaded.
        assert seg.prepare_labels(["floor", "door"]).model == "lgseg_lite_minilm.safetensors"
    assert "changed since the configure read it" in caplog.text
    assert seg.routes and seg._rooms_sha == seg._rooms.source.checkpoint_sha256
    assert seg.prepare_labels(["floor", "car"]).model == "lgseg_lite_minilm.safetensors"


def test_a_configure_that_builds_nothing_serves_room_words_on_the_street_model_until_the_next_set(
        tmp_path, monkeypatch):
    """Audit round 18 made the node's configures after the first build no files; its review
    found that a rooms model not yet built at the size then failed the configure (and on a
    torch-free install every reconfigure). Now the street model answers that set, with a
    warning, routing stays on, and the next set with room words builds and loads it."""
    monkeypatch.setenv("LGSEG_ARTEFACTS", str(tmp_path))   # nothing built at this size yet
    size = (64, 96)
    Segmenter(backend="onnxruntime", precision="fp32", net_size=size, route=False)  # street files
    built = sorted(tmp_path.rglob("*.onnx"))
    seg = Segmenter(backend="onnxruntime", precision="fp32", net_size=size, allow_build=False)
    ls = seg.prepare_labels(["floor", "door"], allow_build=False)
    assert ls.model == "lgseg_lite_minilm.safetensors" and seg.routes and seg._rooms is None
    assert sorted(tmp_path.rglob("*.onnx")) == built, "a file was built without allow_build"
    assert seg.prepare_labels(["floor", "door"]).model == "lgseg_lite_minilm_rooms.safetensors"
    assert len(sorted(tmp_path.rglob("*.onnx"))) > len(built)


def test_the_rooms_model_gets_the_street_models_single_label_margin():
    """One single_label_margin for both shipped models: the rooms model is built from
    _rooms_args on the first set that needs it."""
    seg = Segmenter(backend="onnxruntime", precision="fp32", single_label_margin=0.75)
    assert seg.single_label_margin == 0.75
    assert seg._rooms_args["single_label_margin"] == 0.75
    with pytest.raises(ValueError, match="single_label_margin must be in .*'abc'"):
        Segmenter(backend="onnxruntime", precision="fp32", single_label_margin="abc")
