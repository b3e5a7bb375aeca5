"""Text encoders: the offline MiniLM (real weights), open_clip on a tiny random config, the cache."""

import pytest
import torch

from lgseg_ros.labels import LabelSetError
from lgseg_ros.text import (CachedTextEncoder, EmbeddingCache, TextEncoder, build_text_encoder,
                            register_openclip_config)

LABELS10 = ["road", "sky", "building", "tree", "car", "person", "sign", "fence", "pole", "sidewalk"]

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm")


@pytest.fixture(scope="module")
def tiny_clip():
    register_openclip_config("lgseg-test-tiny-clip", TINY_CLIP)
    torch.manual_seed(0)
    return build_text_encoder("openclip:lgseg-test-tiny-clip")


def _check_embeddings(emb, k, d):
    assert emb.shape == (k, d)
    assert emb.dtype == torch.float32 and emb.device.type == "cpu"
    # Training feeds embeddings into layers autograd records; inference tensors would fail there.
    assert not emb.is_inference()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(k), atol=1e-5, rtol=0)


def test_minilm_interface_and_semantics(minilm):
    assert isinstance(minilm, TextEncoder)
    assert minilm.name == "minilm" and minilm.dim == 384
    emb = minilm.encode(["cat", "kitten", "truck"])
    _check_embeddings(emb, 3, 384)
    # Real pretrained weights: related words are closer than unrelated ones.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_minilm_rows_follow_labels(minilm):
    a = minilm.encode(["road", "sky", "car"])
    b = minilm.encode(["car", "road", "sky"])
    torch.testing.assert_close(b, a[[2, 0, 1]], atol=1e-5, rtol=0)
    dup = minilm.encode(["sky", "sky"])
    torch.testing.assert_close(dup[0], dup[1])


@pytest.mark.parametrize("bad, message", [
    ([], "empty"), (["road", 3], "not a string"), (["road", None], "not a string"),
    ("road", "single string"), (["road", "  "], "blank")])
def test_encoders_reject_bad_labels(minilm, bad, message):
    with pytest.raises(LabelSetError, match=message):
        minilm.encode(bad)
    with pytest.raises(LabelSetError, match=message):
        CachedTextEncoder(minilm).encode(bad)


def test_prompt_template():
    plain = build_text_encoder("minilm").encode(["car"])
    enc = build_text_encoder("minilm", template="a photo of a {}.")
    assert enc.template == "a photo of a {}."
    templated = enc.encode(["car"])
    assert not torch.allclose(plain, templated, atol=1e-3)
    torch.testing.assert_close(templated, build_text_encoder("minilm").encode(["a photo of a car."]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exactly one"):
        build_text_encoder("minilm", template="a photo")


def test_unknown_spec():
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("word2vec")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        build_text_encoder("openclip:No-Such-Arch")


def test_cache_encodes_each_label_once(minilm):
    enc = CachedTextEncoder(minilm)
    first = enc.encode(LABELS10)
    assert (enc.misses, enc.hits, len(enc)) == (10, 0, 10)
    again = enc.encode(list(reversed(LABELS10)) + ["lane marking"])
    assert (enc.misses, enc.hits, len(enc)) == (11, 10, 11)
    assert torch.equal(again[:10], first.flip(0))
    assert not again.is_inference()
    torch.testing.assert_close(again[10], minilm.encode(["lane marking"])[0], atol=1e-5, rtol=0)


def test_cache_keys_include_template(minilm):
    shared = EmbeddingCache()
    plain = CachedTextEncoder(minilm, shared)
    templated = CachedTextEncoder(build_text_encoder("minilm", template="a photo of a {}."), shared)
    a = plain.encode(["car"])
    b = templated.encode(["car"])
    assert len(shared) == 2 and templated.misses == 1
    assert not torch.allclose(a, b, atol=1e-3)


def test_cache_eviction_keeps_answers_right(minilm):
    enc = CachedTextEncoder(minilm, EmbeddingCache(max_entries=3))
    out = enc.encode(LABELS10[:5])
    assert len(enc) == 3
    torch.testing.assert_close(out, minilm.encode(LABELS10[:5]), atol=1e-5, rtol=0)


def test_cached_label_set_is_not_encoded_again(minilm):
    """A repeated label set is served from the cache (its speed is measured by `lgseg bench`,
    label path, not asserted here)."""
    enc = CachedTextEncoder(minilm)
    first = enc.encode(LABELS10)
    misses = enc.misses
    again = enc.encode(list(reversed(LABELS10)))
    assert enc.misses == misses
    torch.testing.assert_close(again, first.flip(0), atol=0, rtol=0)


def test_openclip_tiny_random(tiny_clip):
    assert tiny_clip.name == "openclip:lgseg-test-tiny-clip:random"
    assert tiny_clip.dim == 32
    emb = tiny_clip.encode(["road", "sky", "unseen gizmo"])
    _check_embeddings(emb, 3, 32)
    perm = tiny_clip.encode(["unseen gizmo", "road", "sky"])
    torch.testing.assert_close(perm, emb[[2, 0, 1]], atol=1e-5, rtol=0)
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    with pytest.raises(LabelSetError, match="not a string"):
        tiny_clip.encode(["road", 1.5])


def test_openclip_template_and_cache(tiny_clip):
    register_openclip_config("lgseg-test-tiny-clip", TINY_CLIP)
    enc = build_text_encoder("openclip:lgseg-test-tiny-clip", template="a photo of a {}.",
                             cached=True)
    assert isinstance(enc, CachedTextEncoder) and enc.template == "a photo of a {}."
    assert torch.equal(enc.encode(["car"]), enc.encode(["car"])) and enc.hits == 1


def test_openclip_local_checkpoint_path(tmp_path, tiny_clip):
    """A robot without internet passes a local checkpoint: same weights, same embeddings."""
    import open_clip

    path = tmp_path / "tiny_clip.pt"
    # The encoder dropped its image tower; a real checkpoint has one, so save a full model
    # carrying the encoder's text weights.
    full = open_clip.create_model("lgseg-test-tiny-clip")
    full.load_state_dict({**full.state_dict(), **{k: v for k, v in tiny_clip.model.state_dict().items()
                                                    if not k.startswith("visual")}})
    torch.save(full.state_dict(), path)
    loaded = build_text_encoder(f"openclip:lgseg-test-tiny-clip:{path}")
    assert loaded.name.endswith(str(path))
    torch.testing.assert_close(loaded.encode(["road", "sky"]), tiny_clip.encode(["road", "sky"]),
                               atol=1e-6, rtol=0)


def test_openclip_missing_weights_fail_clearly(tmp_path):
    register_openclip_config("lgseg-test-tiny-clip", TINY_CLIP)
    with pytest.raises(RuntimeError, match="local checkpoint path"):
        build_text_encoder(f"openclip:lgseg-test-tiny-clip:{tmp_path / 'nope.pt'}")


def test_cache_rows_own_their_memory_and_bytes_are_bounded(minilm):
    """Issue 20 item 8: each cached row was a view that kept its whole encoding batch alive
    (1,125 MB held after 6,000 crafted sets instead of 96 MB). Rows are copies now, and the
    cache is bounded by the bytes its rows hold."""
    row_bytes = minilm.dim * 4
    cache = EmbeddingCache(max_bytes=10 * row_bytes)
    enc = CachedTextEncoder(minilm, cache)
    out = enc.encode(LABELS10 + ["bus", "train", "truck"])
    assert len(cache) == 10 and cache.nbytes == 10 * row_bytes
    with cache.lock:
        rows = list(cache._rows.values())
    assert all(r.untyped_storage().nbytes() == row_bytes for r in rows)  # not the 13-row batch
    torch.testing.assert_close(out, minilm.encode(LABELS10 + ["bus", "train", "truck"]), atol=1e-5, rtol=0)
