"""Segmenter: the API the node uses. Real model (test-tiny), real MiniLM, real backends."""
import os
import threading

import numpy as np
import pytest
import torch

from lgseg_ros.labels import LabelSetError
from lgseg_ros.runtime import preprocess as pp
from lgseg_ros.runtime.segmenter import LabelSet, Segmenter, default_checkpoint_path

NET = (64, 96)


@pytest.fixture(scope="module")
def encoder():
    from lgseg_ros.text import CachedTextEncoder, build_text_encoder

    return CachedTextEncoder(build_text_encoder("minilm"))


@pytest.fixture(scope="module")
def seg(encoder, tmp_path_factory):
    torch.manual_seed(0)
    return Segmenter(config="test-tiny", backend="onnxruntime", net_size=NET, text_encoder=encoder,
                     engine_cache_dir=str(tmp_path_factory.mktemp("cache")))


def frame(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def test_untrained_model_is_flagged_loudly(encoder, caplog, tmp_path):
    with caplog.at_level("WARNING"):
        s = Segmenter(config="test-tiny", backend="torch", net_size=NET, text_encoder=encoder)
    assert s.untrained and s.checkpoint is None
    assert any("NO CHECKPOINT" in r.getMessage() for r in caplog.records)


def test_prepare_labels_validates_normalises_and_is_immutable(seg):
    ls = seg.prepare_labels(["Road", "traffic  light", "sky"])
    assert isinstance(ls, LabelSet) and len(ls) == 3 and ls.unlabeled == 255
    assert ls.names == ("road", "traffic light", "sky")
    assert ls.embeddings.shape == (3, 384) and ls.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ls.embeddings, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        ls.embeddings[0, 0] = 1.0  # read-only: a loaded set cannot change under the backend
    with pytest.raises(AttributeError):
        ls.names = ("x",)
    assert seg.prepare_labels(["road"]).generation != ls.generation
    for bad, msg in ([[], "empty"], [["a", "A"], "duplicate"], ["road", "single string"],
                     [["ok", 3], "not a string"]):
        with pytest.raises(LabelSetError, match=msg):
            seg.prepare_labels(bad)


def test_labels_the_text_encoder_cannot_tell_apart_are_refused(seg):
    """MiniLM's tokenizer drops accents: 'röad' is 'road' to it (audit round 18)."""
    with pytest.raises(LabelSetError, match=r"label 2 'cár' is the same as label 0 'car' to the text encoder"):
        seg.prepare_labels(["car", "road", "cár"])
    assert seg.prepare_labels(["car", "cars", "road"]).names == ("car", "cars", "road")


@pytest.mark.parametrize("shape", [(64, 96), (50, 70), (120, 90), (37, 300)])
def test_segment_returns_input_resolution(seg, shape):
    ls = seg.prepare_labels(["road", "sky", "car"])
    result = seg.segment(frame(*shape), ls)
    assert result.ids.shape == shape and result.ids.dtype == np.uint8
    assert result.confidence.shape == shape and result.confidence.dtype == np.uint8
    assert result.label_set is ls
    assert set(np.unique(result.ids)) <= {0, 1, 2, 255}
    assert set(result.timings) >= {"preprocess", "model", "postprocess"}
    assert all(v >= 0 for v in result.timings.values())
    # Max softmax over K+1=4 channels is at least 1/4.
    assert result.confidence.min() >= 255 // 4


def test_frames_of_ever_new_sizes_leave_no_state_behind(seg):
    """Probe round 13: the per-size letterbox plans were kept in a dict with no bound, one entry
    per new size a peer sent (1xN frames, N = 1, 2, 3, ...). Only the last size's plan is kept,
    and a size seen again is planned again, correctly."""
    ls = seg.prepare_labels(["road", "sky"])
    for n in range(1, 40):
        assert seg.segment(frame(1, n), ls).ids.shape == (1, n)
    assert (seg._geometry.src_h, seg._geometry.src_w) == (1, 39)
    again = seg.segment(frame(50, 70), ls)
    assert again.ids.shape == (50, 70)
    np.testing.assert_array_equal(seg.segment(frame(1, 5), ls).ids,
                                  seg.segment(frame(1, 5), ls).ids)


def test_none_channel_maps_to_unlabeled_and_matches_backend(seg):
    """At network size (no resize), segment() is exactly the backend's output with
    channel K -> 255 and confidence scaled to 0..255."""
    ls = seg.prepare_labels(["road", "sky"])
    rgb = frame(*NET, seed=5)
    result = seg.segment(rgb, ls)
    image = pp.preprocess(rgb, pp.plan(rgb.shape[:2], NET))
    ids, conf = seg.backend.infer(image)
    expect = np.where(ids == 2, 255, ids).astype(np.uint8)
    np.testing.assert_array_equal(result.ids, expect)
    np.testing.assert_array_equal(result.confidence, np.rint(conf * 255).astype(np.uint8))


def test_score_threshold_marks_low_confidence_unlabeled(encoder):
    strict = Segmenter(config="test-tiny", backend="torch", net_size=NET, text_encoder=encoder,
                       score_threshold=1.0)
    result = strict.segment(frame(40, 60), strict.prepare_labels(["a", "b", "c"]))
    assert np.all(result.ids == 255)  # no pixel of a random net is 100% sure
    with pytest.raises(ValueError, match="score_threshold"):
        Segmenter(config="test-tiny", backend="torch", net_size=NET, text_encoder=encoder,
                  score_threshold=1.5)


def test_more_than_254_labels_gives_uint16(seg):
    ls = seg.prepare_labels([f"thing {i}" for i in range(256)])  # the maximum
    assert ls.unlabeled == 65535
    result = seg.segment(frame(30, 40), ls)
    assert result.ids.dtype == np.uint16
    assert set(np.unique(result.ids)) <= set(range(256)) | {65535}


def test_label_change_is_atomic_between_frames(seg):
    """Label sets swapped from another thread: every result matches exactly its set."""
    sets = [seg.prepare_labels(["road", "sky"]),
            seg.prepare_labels([f"object {i}" for i in range(9)])]
    results, errors = [], []

    def worker(i):
        try:
            for j in range(6):
                ls = sets[(i + j) % 2]
                results.append((ls, seg.segment(frame(48, 64, seed=j), ls)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for ls, r in results:
        assert r.label_set is ls
        valid = set(range(len(ls))) | {ls.unlabeled}
        assert set(np.unique(r.ids)) <= valid
    # Same labels and frame -> same output whichever set was loaded before.
    a = seg.segment(frame(48, 64, seed=0), sets[0]).ids
    seg.segment(frame(48, 64, seed=0), sets[1])
    np.testing.assert_array_equal(seg.segment(frame(48, 64, seed=0), sets[0]).ids, a)


def test_backends_agree_through_segmenter(seg, encoder):
    torch_seg = Segmenter(config="test-tiny", backend="torch", net_size=NET, text_encoder=encoder)
    torch_seg.backend.frame.net.load_state_dict(seg.net.state_dict())
    ls = seg.prepare_labels(["road", "sky", "car", "tree"])
    rgb = frame(90, 120, seed=2)
    a, b = seg.segment(rgb, ls), torch_seg.segment(rgb, ls)
    assert np.mean(a.ids == b.ids) >= 0.999
    assert np.max(np.abs(a.confidence.astype(int) - b.confidence.astype(int))) <= 1


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10), np.uint8), "HxWx3"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    ("not an image", "numpy"),
])
def test_bad_frames_raise_value_error(seg, bad, msg):
    ls = seg.prepare_labels(["road"])
    with pytest.raises(ValueError, match=msg):
        seg.segment(bad, ls)


def test_bad_label_set_and_net_size(seg, encoder):
    with pytest.raises(ValueError, match="LabelSet"):
        seg.segment(frame(10, 10), ["road"])
    with pytest.raises(ValueError, match="multiples of 8"):
        Segmenter(config="test-tiny", backend="torch", net_size=(65, 96), text_encoder=encoder)


def test_checkpoint_round_trip(seg, encoder, tmp_path):
    from lgseg_ros.model import get_config, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", seg.net, get_config("test-tiny"))
    loaded = Segmenter(checkpoint=str(ckpt), backend="torch", net_size=NET, text_encoder=encoder)
    assert not loaded.untrained and loaded.cfg.name == "test-tiny"
    ls = seg.prepare_labels(["road", "sky", "car"])
    rgb = frame(*NET, seed=9)
    assert np.mean(loaded.segment(rgb, ls).ids == seg.segment(rgb, ls).ids) >= 0.999


def test_encoder_width_must_match_model(encoder):
    with pytest.raises(ValueError, match="expects"):
        Segmenter(config="lite-clip", backend="torch", net_size=NET, text_encoder=encoder)


def test_default_checkpoint_path_is_none_or_a_file(monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # no sourced workspace: no crash
    path = default_checkpoint_path()
    assert path is None or (path.endswith("lgseg_lite_minilm.safetensors") and os.path.isfile(path))


def test_checkpoint_found_in_ament_share_dir(tmp_path, monkeypatch):
    pytest.importorskip("ament_index_python", reason="ament_index_python not installed")
    from lgseg_ros.resources import share_path

    name = "models/lgseg_lite_minilm.safetensors"
    prefix = tmp_path / "install"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/lgseg_ros").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert share_path(name) is None  # package found, file absent
    ckpt = prefix / "share/lgseg_ros/models/lgseg_lite_minilm.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert share_path(name) == ckpt


def test_label_limit_of_a_bounded_backend_is_enforced_on_the_label_path(seg, monkeypatch):
    # A TensorRT engine's K profile bounds the label count (max_labels); the set must be
    # refused by prepare_labels, where the caller keeps its old set, not on the next frame.
    monkeypatch.setattr(seg.backend, "max_labels", 4, raising=False)
    assert len(seg.prepare_labels(["a", "b", "c", "d"])) == 4
    with pytest.raises(LabelSetError, match="maximum of 4"):
        seg.prepare_labels(["a", "b", "c", "d", "e"])


def test_single_label_margin_gives_a_name_asked_alone_what_none_won_narrowly(
        encoder, tmp_path, camvid_root):
    """single_label_margin (stage 22c): for one name, "none" keeps a pixel only where it wins
    by more than the margin, i.e. where its softmax share is at least sigmoid(margin); the
    name's confidence is then its own share. Sets of two names are untouched. The shipped
    street model on a CamVid train frame: an untrained net gives "none" no pixel at all."""
    import cv2
    from lgseg_ros.runtime.segmenter import default_checkpoint_path
    ckpt = default_checkpoint_path()
    net = (128, 160)
    segs = {m: Segmenter(checkpoint=ckpt, backend="onnxruntime", net_size=net, route=False,
                         text_encoder=encoder, single_label_margin=m,
                         engine_cache_dir=str(tmp_path / "cache"))
            for m in (0.0, 1.0)}
    first = (camvid_root / "train.txt").read_text().split()[0]
    bgr = cv2.imread(str(camvid_root / first))
    rgb = np.ascontiguousarray(cv2.resize(bgr, net[::-1], interpolation=cv2.INTER_AREA)[..., ::-1])
    one = {m: s.prepare_labels(["pole"]) for m, s in segs.items()}
    segs[0.0].backend.set_labels(one[0.0].embeddings)
    ids, conf = segs[0.0].backend.infer(pp.preprocess(rgb, pp.plan(rgb.shape[:2], net)))
    close = (ids == 1) & (conf <= 1 / (1 + np.exp(-1.0)))
    assert close.any() and (ids == 1).sum() > close.sum(), "the frame does not exercise the margin"
    plain, wide = segs[0.0].segment(rgb, one[0.0]), segs[1.0].segment(rgb, one[1.0])
    np.testing.assert_array_equal(plain.ids, np.where(ids == 1, 255, ids).astype(np.uint8))
    np.testing.assert_array_equal(wide.ids, np.where((ids == 1) & ~close, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(wide.confidence[close],
                                  np.rint((1 - conf[close]) * 255).astype(np.uint8))
    np.testing.assert_array_equal(wide.confidence[~close], plain.confidence[~close])
    two = [s.segment(rgb, s.prepare_labels(["pole", "road"])).ids for s in segs.values()]
    np.testing.assert_array_equal(two[0], two[1])
    for bad in (-0.1, 4.5, float("nan")):
        with pytest.raises(ValueError, match="single_label_margin"):
            Segmenter(config="test-tiny", backend="torch", net_size=NET, text_encoder=encoder,
                      single_label_margin=bad)
