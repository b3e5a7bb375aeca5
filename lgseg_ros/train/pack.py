r"""`lgseg pack-data`: a training set as a few checksummed chunk files, to travel where the
data does not (a borrowed GPU machine takes a limited upload per call and reaches nothing).

    lgseg pack-data --source runs/pl/camvid_fine:0.45 --source runs/pl/indoor:0.55 \
        --train-split s4train --out .pack/rooms --chunk-mib 20
    lgseg train --source pack:.pack/rooms ...      # the same sources, shares and labels
    lgseg pack-data --check .pack/rooms            # every chunk there and intact?

It reads the sources as `lgseg train --source` does (folder datasets, `camvid`; the split
of --train-split for each, evaluation splits refused) and writes::

    OUT/lgseg_pack.json          manifest: format, sources (data, share, split, class
                                 names), frames [source, stem, chunk, height, width],
                                 chunks (file, bytes, sha256), encoding
    OUT/chunk-000.safetensors    per frame i: "i<i>" the image (JPEG bytes), "l<i>" the
    OUT/chunk-001.safetensors    label (PNG bytes, class ids, 255 = ignore); each chunk at
    ...                          most --chunk-mib MiB

Labels are stored after the source's own lookup (CamVid's void 11 is 255 already), so
the pack's class ids are its class names' line numbers. An image that is a JPEG already
(the indoor photos) is kept byte for byte when it decodes to the same pixels; others are
encoded at --quality. The manifest is written last: a stopped run leaves no pack.

Reading treats a pack as untrusted input: the manifest's sizes and counts are checked
before anything is allocated, every chunk's size and sha256 before it is parsed (from the
bytes that were hashed), and every image's header before it is decoded. safetensors and
JSON only: nothing in a pack runs code.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path

import cv2
import numpy as np

from .datasets import IGNORE, SegDataset, _lut, build_dataset, read_label, read_rgb
from .training_input import check_training_source, refuse_evaluation_split

FORMAT, VERSION = "lgseg-pack", 1
MANIFEST = "lgseg_pack.json"
PREFIX = "pack:"
# Limits on what a manifest may claim, checked before allocating for it.
MAX_MANIFEST_BYTES = 64 << 20
MAX_CHUNK_BYTES = 1 << 30
MAX_PACK_BYTES = 16 << 30       # a pack is held in memory whole (compressed)
MAX_FRAMES = 1_000_000
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
CHUNK_RE = re.compile(r"chunk-\d{3,6}\.safetensors")
# safetensors' header per tensor ({"i12":{"dtype":"U8","shape":[n],"data_offsets":[a,b]}})
# is under 100 bytes; this margin keeps a chunk under its limit without writing it twice.
HEADER_MARGIN = 160


class PackError(ValueError):
    """A pack that cannot be read as it is: the message names the file."""


# ------------------------------------------------------------------ writing
def _encode_image(rgb: np.ndarray, path: Path, resized: bool, quality: int) -> bytes:
    if not resized and path.suffix.lower() in (".jpg", ".jpeg"):
        raw = path.read_bytes()
        # Kept only if it decodes as training decodes it and its header gives that size
        # (an EXIF rotation or an odd colour model is re-encoded instead): a second lossy
        # pass over photos that are JPEG already would cost pixels and save no bytes.
        back = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        try:
            size = _jpeg_size(raw)
        except PackError:
            size = None
        if (back is not None and size == rgb.shape[:2]
                and np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb)):
            return raw
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode {path} as JPEG")
    return buf.tobytes()


def _encode_label(lbl: np.ndarray, path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", lbl, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"cannot encode {path} as PNG")
    return buf.tobytes()


class _ChunkWriter:
    def __init__(self, out: Path, limit: int):
        self.out, self.limit = out, limit
        self.chunks: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.size = 0

    def add(self, records: dict[str, bytes], what: str) -> int:
        """Adds one frame's records (image and label bytes, kept in one chunk) and returns
        that chunk's index."""
        need = sum(len(b) + HEADER_MARGIN for b in records.values())
        if need + 1024 > self.limit:
            raise SystemExit(f"{what}: {need} bytes, more than a chunk of {self.limit} "
                             "bytes holds (raise --chunk-mib)")
        if self.tensors and self.size + need + 1024 > self.limit:
            self.flush()
        for key, data in records.items():
            self.tensors[key] = np.frombuffer(data, np.uint8)
        self.size += need
        return len(self.chunks)

    def flush(self):
        if not self.tensors:
            return
        from safetensors.numpy import save

        name = f"chunk-{len(self.chunks):03d}.safetensors"
        blob = save(self.tensors, metadata={"format": FORMAT, "chunk": str(len(self.chunks))})
        if len(blob) > self.limit:     # the margin above is meant to make this impossible
            raise RuntimeError(f"{name}: {len(blob)} bytes over the limit {self.limit}")
        tmp = self.out / (name + ".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self.out / name)
        self.chunks.append({"file": name, "bytes": len(blob), "frames": len(self.tensors) // 2,
                            "sha256": hashlib.sha256(blob).hexdigest()})
        self.tensors, self.size = {}, 0


def pack_sources(sources: list[tuple[str, float]], split: str, out: str | Path,
                 chunk_mib: float = 20, quality: int = 90, max_side: int | None = None,
                 limit_images: int | None = None, progress: bool = False) -> dict:
    """Writes the pack of ``sources`` ([(data, share)]) and returns its manifest."""
    refuse_evaluation_split(split)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out {out}: not empty (a pack is written into a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    writer = _ChunkWriter(out, int(chunk_mib * (1 << 20)))
    manifest_sources, frames = [], []
    sizes = np.zeros((len(sources), 2), np.int64)       # image, label bytes per source
    if len({d for d, _ in sources}) != len(sources):
        raise SystemExit(f"--source: a source given twice ({[d for d, _ in sources]})")
    for k, (data, share) in enumerate(sources):
        if data.startswith(PREFIX):
            raise SystemExit(f"--source {data}: already a pack")
        check_training_source(data)
        ds = build_dataset(data, split)
        if limit_images:
            ds = ds.subset(limit_images)
        if len(ds.class_names) > IGNORE:
            raise SystemExit(f"{data}: {len(ds.class_names)} classes; at most {IGNORE} fit")
        pairs = ds.pairs
        if progress:
            from tqdm import tqdm
            pairs = tqdm(pairs, desc=f"pack {ds.name}", file=sys.stderr, dynamic_ncols=True)
        stems = set()
        for img_path, lbl_path in pairs:
            stem = Path(img_path).stem
            if stem in stems:
                raise SystemExit(f"{data}: two frames named {stem!r}")
            stems.add(stem)
            rgb, lbl = read_rgb(img_path), ds.lut[read_label(lbl_path)]
            if rgb.shape[:2] != lbl.shape:
                raise SystemExit(f"{img_path} is {rgb.shape[:2]} but {lbl_path} is {lbl.shape}")
            resized = False
            if max_side and max(lbl.shape) > max_side:
                f = max_side / max(lbl.shape)
                size = (max(1, round(lbl.shape[1] * f)), max(1, round(lbl.shape[0] * f)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                lbl = cv2.resize(lbl, size, interpolation=cv2.INTER_NEAREST)
                resized = True
            i = len(frames)
            img_b = _encode_image(rgb, Path(img_path), resized, quality)
            lbl_b = _encode_label(lbl, Path(lbl_path))
            sizes[k] += (len(img_b), len(lbl_b))
            c = writer.add({f"i{i}": img_b, f"l{i}": lbl_b}, str(img_path))
            frames.append([k, stem, c, int(lbl.shape[0]), int(lbl.shape[1])])
        manifest_sources.append({"data": data, "share": float(share), "split": split,
                                 "name": ds.name, "class_names": list(ds.class_names),
                                 "frames": len(ds), "image_bytes": int(sizes[k, 0]),
                                 "label_bytes": int(sizes[k, 1])})
    writer.flush()
    manifest = {"format": FORMAT, "version": VERSION, "ignore": IGNORE,
                "encoding": {"image": "jpeg", "quality": quality, "max_side": max_side,
                             "label": "png"},
                "sources": manifest_sources, "chunks": writer.chunks, "frames": frames}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return manifest


# ------------------------------------------------------------------ reading
def _jpeg_size(b: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, without decoding it."""
    if b[:2] != b"\xff\xd8":
        raise PackError("not a JPEG")
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            raise PackError("broken JPEG marker")
        m = b[i + 1]
        if m == 0xFF:                                  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:             # markers without a length
            i += 2
            continue
        if m == 0xDA:                                  # scan data before any frame header
            break
        seg = struct.unpack(">H", b[i + 2:i + 4])[0]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            return struct.unpack(">HH", b[i + 5:i + 9])
        i += 2 + seg
    raise PackError("JPEG without a frame header")


def _png_gray8_size(b: bytes) -> tuple[int, int]:
    """(height, width) of an 8-bit single-channel PNG from its IHDR, without decoding."""
    if len(b) < 26 or b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR":
        raise PackError("not a PNG")
    w, h = struct.unpack(">II", b[16:24])
    if b[24] != 8 or b[25] != 0:
        raise PackError(f"PNG of bit depth {b[24]}, colour type {b[25]}: labels are 8-bit grey")
    return h, w


def _is_int(x, lo: int, hi: int) -> bool:
    return type(x) is int and lo <= x <= hi


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise PackError(f"{path}: missing (not a pack, or not all of it arrived: lgseg "
                        "pack-data writes the manifest last)")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise PackError(f"{path}: {size} bytes, more than a manifest may be "
                        f"({MAX_MANIFEST_BYTES})")
    try:
        m = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise PackError(f"{path}: not JSON ({e})") from None

    def need(ok, what):
        if not ok:
            raise PackError(f"{path}: {what}")

    need(isinstance(m, dict) and m.get("format") == FORMAT, f"not an {FORMAT} manifest")
    need(m.get("version") == VERSION, f"version {m.get('version')!r}; this reader reads {VERSION}")
    need(m.get("ignore") == IGNORE, f"ignore value {m.get('ignore')!r}, expected {IGNORE}")
    sources, chunks, frames = m.get("sources"), m.get("chunks"), m.get("frames")
    need(isinstance(sources, list) and 1 <= len(sources) <= IGNORE, "bad source list")
    for s in sources:
        need(isinstance(s, dict) and isinstance(s.get("data"), str)
             and isinstance(s.get("split"), str) and isinstance(s.get("name"), str),
             f"bad source entry {str(s)[:200]}")
        need(type(s.get("share")) in (int, float) and 0 < s["share"] < float("inf"),
             f"source {s['data']}: share {s.get('share')!r} is not > 0")
        names = s.get("class_names")
        need(isinstance(names, list) and 1 <= len(names) <= IGNORE
             and all(isinstance(x, str) and 0 < len(x) <= 1000 for x in names)
             and len(set(names)) == len(names), f"source {s['data']}: bad class names")
        need(_is_int(s.get("frames"), 1, MAX_FRAMES), f"source {s['data']}: bad frame count")
        try:
            refuse_evaluation_split(s["split"])
        except SystemExit as e:
            raise PackError(f"{path}: source {s['data']}: {e}") from None
    need(len({s["data"] for s in sources}) == len(sources), "a source is listed twice")
    need(isinstance(chunks, list) and 1 <= len(chunks) <= MAX_FRAMES, "bad chunk list")
    for c in chunks:
        need(isinstance(c, dict) and isinstance(c.get("file"), str)
             and CHUNK_RE.fullmatch(c["file"]) and _is_int(c.get("bytes"), 1, MAX_CHUNK_BYTES)
             and isinstance(c.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", c["sha256"])
             and _is_int(c.get("frames"), 1, MAX_FRAMES), f"bad chunk entry {str(c)[:200]}")
    need(len({c["file"] for c in chunks}) == len(chunks), "a chunk file is listed twice")
    need(sum(c["bytes"] for c in chunks) <= MAX_PACK_BYTES,
         f"chunks of more than {MAX_PACK_BYTES} bytes in all")
    need(isinstance(frames, list) and 1 <= len(frames) <= MAX_FRAMES, "bad frame list")
    seen = set()
    per_source, per_chunk = [0] * len(sources), [0] * len(chunks)
    for f in frames:
        ok = (isinstance(f, list) and len(f) == 5 and _is_int(f[0], 0, len(sources) - 1)
              and isinstance(f[1], str) and 0 < len(f[1]) <= 512 and "/" not in f[1]
              and "\0" not in f[1] and f[1] not in (".", "..")
              and _is_int(f[2], 0, len(chunks) - 1) and _is_int(f[3], 1, MAX_SIDE)
              and _is_int(f[4], 1, MAX_SIDE) and f[3] * f[4] <= MAX_PIXELS)
        need(ok, f"bad frame entry {str(f)[:200]} (sizes at most {MAX_SIDE} a side, "
                 f"{MAX_PIXELS} pixels)")
        need((f[0], f[1]) not in seen, f"frame {f[1]!r} listed twice")
        seen.add((f[0], f[1]))
        per_source[f[0]] += 1
        per_chunk[f[2]] += 1
    need(per_source == [s["frames"] for s in sources], "frame counts differ from the sources'")
    need(per_chunk == [c["frames"] for c in chunks], "frame counts differ from the chunks'")
    return m


class Pack:
    """A verified pack in memory (compressed; frames are decoded when read)."""

    def __init__(self, root: str | Path):
        from safetensors.numpy import load

        self.root = Path(root)
        m = _read_manifest(self.root)
        self.sources, self.chunks, self.frames = m["sources"], m["chunks"], m["frames"]
        keys: list[set] = [set() for _ in self.chunks]
        for i, f in enumerate(self.frames):
            keys[f[2]].update((f"i{i}", f"l{i}"))
        self._data: dict[str, np.ndarray] = {}
        for c, info in enumerate(self.chunks):
            path = self.root / info["file"]
            where = f"{path} (chunk {c + 1} of {len(self.chunks)})"
            if not path.is_file():
                raise PackError(f"{where}: missing; send it again")
            size = path.stat().st_size
            if size != info["bytes"]:
                raise PackError(f"{where}: {size} bytes, the manifest says {info['bytes']} "
                                "(truncated or altered; send it again)")
            with open(path, "rb") as fh:
                blob = fh.read(info["bytes"] + 1)
            # parsed from the very bytes that were hashed: a file changing after the check
            # cannot slip through
            if len(blob) != info["bytes"] or hashlib.sha256(blob).hexdigest() != info["sha256"]:
                raise PackError(f"{where}: sha256 differs from the manifest's (altered or "
                                "damaged; send it again)")
            try:
                tensors = load(blob)
            except Exception as e:  # the library's own errors, whatever their type
                raise PackError(f"{where}: not a readable safetensors file ({e})") from None
            if set(tensors) != keys[c] or any(a.dtype != np.uint8 or a.ndim != 1
                                               for a in tensors.values()):
                raise PackError(f"{where}: its records are not the manifest's")
            self._data.update(tensors)
        self._index: dict[tuple, int] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``i``: (RGB uint8 HxWx3, label uint8 HxW), sizes checked before decoding."""
        k, stem, c, h, w = self.frames[i]
        img_b, lbl_b = self._data[f"i{i}"], self._data[f"l{i}"]
        where = f"{self.root / self.chunks[c]['file']}: frame {stem!r}"
        try:
            if _jpeg_size(img_b.tobytes()) != (h, w) or _png_gray8_size(
                    lbl_b[:26].tobytes()) != (h, w):
                raise PackError(f"not {h}x{w} as the manifest says")
        except (PackError, struct.error) as e:
            raise PackError(f"{where}: {e}") from None
        img = cv2.imdecode(img_b, cv2.IMREAD_COLOR)
        lbl = cv2.imdecode(lbl_b, cv2.IMREAD_UNCHANGED)
        if img is None or img.shape != (h, w, 3) or lbl is None or lbl.shape != (h, w) \
                or lbl.dtype != np.uint8:
            raise PackError(f"{where}: does not decode to {h}x{w}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), lbl

    def source_index(self, data: str) -> int:
        for k, s in enumerate(self.sources):
            if s["data"] == data:
                return k
        raise PackError(f"{self.root}: holds no source {data!r}")

    def dataset(self, k: int, cache: bool = False) -> SegDataset:
        """Source ``k`` as a SegDataset; its pairs are names under the pack, not files."""
        src = self.sources[k]
        base = self.root / f"source{k}"
        pairs = []
        for i, f in enumerate(self.frames):
            if f[0] == k:
                pair = (base / "images" / f"{f[1]}.jpg", base / "labels" / f"{f[1]}.png")
                self._index[pair] = i
                pairs.append(pair)
        return SegDataset(pairs, tuple(src["class_names"]), _lut(len(src["class_names"])),
                          cache=cache, name=f"{src['name']} (pack)", reader=self._read_pair)

    def _read_pair(self, pair) -> tuple[np.ndarray, np.ndarray]:
        return self.read(self._index[pair])


def read_manifest(root: str | Path) -> dict:
    """The manifest alone, checked (for listing a pack's sources before reading it)."""
    return _read_manifest(Path(root))


# ------------------------------------------------------------------ command
def parse_args(argv):
    p = argparse.ArgumentParser(prog="lgseg pack-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", metavar="DATA[:SHARE]",
                   help="a training source as lgseg train --source takes it (repeatable)")
    p.add_argument("--train-split", default="train",
                   help="the split read from every source, as lgseg train's (default train)")
    p.add_argument("--out", help="a new (or empty) folder for the pack")
    p.add_argument("--chunk-mib", type=float, default=20.0,
                   help="largest chunk file in MiB (default 20)")
    p.add_argument("--quality", type=int, default=90,
                   help="JPEG quality of re-encoded images (default 90)")
    p.add_argument("--max-side", type=int,
                   help="shrink frames whose longer side is larger (labels: nearest)")
    p.add_argument("--limit-images", type=int, help="only the first N frames of each source")
    p.add_argument("--check", metavar="PACK",
                   help="verify PACK (manifest, every chunk's size and sha256) and stop")
    p.add_argument("--decode", action="store_true", help="with --check: decode every frame")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from .multisource import SourceSpec

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.check:
        try:
            pack = Pack(args.check)
            if args.decode:
                for i in range(len(pack)):
                    pack.read(i)
        except PackError as e:
            print(f"lgseg pack-data: {e}", file=sys.stderr)
            return 1
        print(json.dumps({"pack": str(args.check), "frames": len(pack),
                          "chunks": len(pack.chunks),
                          "bytes": sum(c["bytes"] for c in pack.chunks),
                          "decoded": bool(args.decode),
                          "sources": [{k: s[k] for k in ("data", "share", "split", "frames")}
                                      for s in pack.sources]}, indent=1))
        return 0
    if not args.source or not args.out:
        raise SystemExit("lgseg pack-data: --source (one or more) and --out, or --check PACK")
    if not 0.1 <= args.chunk_mib <= MAX_CHUNK_BYTES / (1 << 20):
        raise SystemExit(f"--chunk-mib {args.chunk_mib}: must be in [0.1, "
                         f"{MAX_CHUNK_BYTES >> 20}]")
    if not 1 <= args.quality <= 100:
        raise SystemExit(f"--quality {args.quality}: must be in 1..100")
    specs = [SourceSpec.parse(s) for s in args.source]
    m = pack_sources([(s.data, s.share) for s in specs], args.train_split, args.out,
                     args.chunk_mib, args.quality, args.max_side, args.limit_images,
                     progress=not args.no_progress)
    total = sum(c["bytes"] for c in m["chunks"])
    print(json.dumps({"pack": args.out, "frames": len(m["frames"]), "chunks": len(m["chunks"]),
                      "bytes": total, "chunk_bytes": [c["bytes"] for c in m["chunks"]],
                      "sources": [{k: s[k] for k in ("data", "share", "split", "frames",
                                                     "image_bytes", "label_bytes")}
                                  for s in m["sources"]]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
