"""Issue 19: MiniLM in ONNX Runtime with `tokenizers` makes the torch encoder's embeddings,
and its export is served only for the weights it came from and only intact."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lgseg_ros.text import CachedTextEncoder, build_text_encoder
from lgseg_ros.text.onnx_minilm import OnnxMiniLMEncoder, TextArtefactError, ensure_minilm_onnx

# Labels as users write them: single words, phrases, odd case and spacing, punctuation,
# non-ASCII, digits, and one longer than MiniLM's 256-token window (truncated alike).
LABELS = ["car", "road", "traffic cone", "Pedestrian crossing the street", "zebra-crossing",
          "café", "bus stop #12", "a", "lamp post", "  sky  ", "building " * 300]
# The bound on cosine similarity to the torch encoder.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    path, manifest = ensure_minilm_onnx(directory=folder)
    return folder, path, manifest


@pytest.fixture(scope="module")
def torch_encoder():
    return build_text_encoder("minilm")


@pytest.mark.parametrize("template", [None, "a photo of a {}."])
def test_onnx_embeddings_equal_torch(exported, torch_encoder, template):
    _, path, _ = exported
    onnx_enc = OnnxMiniLMEncoder(onnx_path=path, template=template)
    ref = torch_encoder if template is None else build_text_encoder("minilm", template=template)
    got = onnx_enc.encode(LABELS)
    want = ref.encode(LABELS).numpy()
    assert isinstance(got, np.ndarray) and got.shape == want.shape == (len(LABELS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * want).sum(1)
    assert cosine.min() >= MIN_COSINE, dict(zip(LABELS, cosine.round(6)))
    # One label at a time (no padding in the batch) gives the same rows as the batch.
    np.testing.assert_allclose(onnx_enc.encode([LABELS[3]])[0], got[3], atol=1e-5)
    assert onnx_enc.name == ref.name == "minilm" and onnx_enc.template == template


def test_cache_keeps_numpy_rows(exported):
    _, path, _ = exported
    cached = CachedTextEncoder(OnnxMiniLMEncoder(onnx_path=path))
    first = cached.encode(["car", "road"])
    again = cached.encode(["road", "car", "sky"])
    assert isinstance(again, np.ndarray) and again.shape == (3, 384)
    np.testing.assert_array_equal(again[0], first[1])
    assert cached.hits == 2 and cached.misses == 3


def test_manifest_records_the_source_and_damaged_or_stale_files_are_refused(exported, tmp_path):
    folder, path, manifest = exported
    assert manifest["source"]["weights_sha256"] and manifest["onnx_sha256"]
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    shutil.copy(path.with_suffix(".json"), copy.with_suffix(".json"))
    assert ensure_minilm_onnx(directory=tmp_path, allow_export=False)[0] == copy

    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(TextArtefactError, match="damaged"):
        ensure_minilm_onnx(directory=tmp_path, allow_export=False)

    shutil.copy(path, copy)
    stale = {**manifest, "source": {**manifest["source"], "weights_sha256": "0" * 64}}
    copy.with_suffix(".json").write_text(json.dumps(stale))
    with pytest.raises(TextArtefactError, match="stale"):
        ensure_minilm_onnx(directory=tmp_path, allow_export=False)
    with pytest.raises(TextArtefactError, match="torch is installed"):
        ensure_minilm_onnx(directory=tmp_path / "empty", allow_export=False)


def test_embedding_tables_are_fp16_and_older_layouts_are_stale(exported, tmp_path):
    """The word-embedding table (30522 x 384) is stored as fp16 and cast per lookup (22 MB
    less RSS in the node; the cosine bound above still holds); an export of the earlier
    all-fp32 layout is refused as stale, so it is rebuilt instead of served."""
    import onnx
    from onnx import TensorProto

    _, path, manifest = exported
    model = onnx.load(str(path))
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    assert dtypes["bert.embeddings.word_embeddings.weight"] == TensorProto.FLOAT16
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.name.endswith("_to_fp32")]
    assert casts and all(dict((a.name, a.i) for a in n.attribute)["to"] == TensorProto.FLOAT for n in casts)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    copy.with_suffix(".json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "layout"}))
    with pytest.raises(TextArtefactError, match="layout"):
        ensure_minilm_onnx(directory=tmp_path, allow_export=False)


def test_a_folder_whose_name_is_too_long_is_passed_over(exported, monkeypatch, tmp_path):
    """Audit round 19: a 5,000-character $LGSEG_ARTEFACTS raised "File name too long" from
    the first folder's lookup, and the node stopped ("configure failed: the export cache")
    before the next folder, which held the encoder, was tried."""
    from lgseg_ros.runtime import artefacts

    _, path, _ = exported
    (tmp_path / "text").mkdir()
    for f in (path, path.with_suffix(".json")):
        shutil.copy(f, tmp_path / "text" / f.name)
    monkeypatch.setenv("LGSEG_ARTEFACTS", "/tmp/" + "x" * 5000)
    monkeypatch.setattr("lgseg_ros.resources.package_path", lambda rel: None)   # not the shipped one
    monkeypatch.setattr(artefacts, "_cache_root", lambda: tmp_path)
    found, _ = ensure_minilm_onnx(allow_export=False)
    assert found == tmp_path / "text" / path.name
