"""Run-time artefacts: the frame path of a checkpoint as ONNX files, usable without torch.

A node on a small robot should not carry torch (0.7 GB of RSS, seconds of import) to run a
graph that ONNX Runtime executes. So the frame path of a checkpoint is exported ahead of
time, where torch exists (`lgseg artefacts`, the development set-up, or the first use on
a machine with torch), and the run-time install reads only these files:

    <dir>/frame/lgseg_<checkpoint sha256[:16]>_<H>x<W>_<precision>.onnx   + .json manifest
    <dir>/text/minilm_<weights sha256[:16]>.onnx                          + .json manifest

A manifest records the sha256 of the checkpoint (or MiniLM weights) the file was made
from and of the ONNX bytes, so a file is served only for the exact source it came from
and only intact (files are untrusted input like any other). The checkpoint's config and
vocabulary come from its safetensors header, which needs no torch either.

Directories searched, first match wins: $LGSEG_ARTEFACTS, the package's models/artefacts
(source tree or installed share), then the user cache (~/.cache/lgseg_ros/artefacts),
which is also where exports on first use are written. A folder or file that someone else
could have written (not owned by this user or root, or writable by others) is skipped
with a warning: a manifest proves a file matches its source only if nobody else could
write both. The bytes hashed are the bytes served (read once, then handed on).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import stat
import sys
import threading
from pathlib import Path

from lgseg_ros.model.checkpoint import CheckpointError

from .engine_cache import (cache_keep, default_cache_dir, mark_used, prune_cache,
                           check_artefact_size, read_manifest_file, read_verified_bytes, sha256_file,
                           untrusted_reason)

log = logging.getLogger(__name__)

FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
_MAX_MANIFEST = 1 << 16
# One build or cache write at a time in this process. A node's label change that reaches
# the rooms model runs on the label worker; a reconfigure meanwhile builds the next
# segmenter's rooms model on the executor thread: both exported the same file at once
# (torch.onnx.export is not reentrant: "AssertionError: GLOBALS.in_onnx_export must be
# False", then a torch fallback or no rooms model) or quantised it into the same .tmp file,
# and configure failed ("Unable to open proto file ... int8.onnx.tmp"), leaving the node
# unconfigured (probe round 11). Reentrant: an int8 build asks for its fp32 file. The
# second builder waits, then finds the first one's file and verifies it. Held here, not in
# export.py: that file's bytes are part of code_digest(), and a change there would make
# every shipped and cached export "exported by other model code".
BUILD_LOCK = threading.RLock()


class CheckpointChanged(CheckpointError):
    """A checkpoint that changed while it was read or before its tensors loaded (a deploy
    replacing it, a training run saving to its path): loading it again may pass, so a routed
    rooms model failing with this is tried again later (segmenter._lasting_failure), not
    turned off until the next configure. Here, not in model/checkpoint.py, whose bytes are
    part of code_digest()."""


# Why a file is not built where the caller said allow_build=False: the node's configures after
# the first. A peer that set net_height and drove cleanup + configure held the node's
# executor for 19 s while a child exported, once per new size (audit round 18).
NO_BUILD_NOW = ("a configure after the node's first builds no files (an export, int8 "
                "quantisation or TensorRT engine build holds the node for seconds to minutes); "
                "build them beforehand with")


class ArtefactError(RuntimeError):
    """An artefact that is missing, stale or damaged and cannot be (re)built here."""


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _cache_root() -> Path:
    return default_cache_dir().parent / "artefacts"


_warned: set[str] = set()


def untrusted(path: Path) -> str | None:
    """Why ``path`` (an artefact folder or file) is not read, or None; a missing path is
    not a reason (the lookup reports it). Warned once per path and reason."""
    if not os.path.lexists(path):
        return None
    reason = untrusted_reason(path)
    if reason and reason not in _warned:
        _warned.add(reason)
        log.warning("not reading artefacts from %s: someone else could have written it "
                    "(%s); chmod go-w, or point $LGSEG_ARTEFACTS at a folder of your own",
                    str(path)[:200], reason[:300])
    return reason


def artefact_dirs() -> list[Path]:
    """The folders searched, in order, without the ones someone else could write."""
    from lgseg_ros.resources import package_path

    dirs = []
    if os.environ.get("LGSEG_ARTEFACTS"):
        dirs.append(Path(os.environ["LGSEG_ARTEFACTS"]))
    shipped = package_path("models/artefacts")
    if shipped is not None:
        dirs.append(shipped)
    dirs.append(_cache_root())
    return [d for d in dict.fromkeys(dirs) if untrusted(d) is None]


def trusted_file(path: Path) -> str | None:
    """Why an artefact file (or its folder) is not read, or None."""
    return untrusted(path.parent) or untrusted(path)


def read_artefact(path: Path, manifest: dict, error=None) -> bytes:
    """The bytes of a verified artefact, read once and checked against its manifest."""
    return read_verified_bytes(path, manifest.get("onnx_sha256", ""), error or ArtefactError)


def _foreign_symlink(path) -> str | None:
    """The first symlink on ``path`` as given (itself or a folder above) owned by neither
    this user nor root, as a reason; None where there is none."""
    given = Path(os.path.abspath(path))
    for part in (given, *given.parents):
        try:
            st = os.lstat(part)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (os.getuid(), 0):
            return f"{str(part)[:200]} is a symlink of user {st.st_uid}"
    return None


def artefact_write_dir(kind: str, option: str = "$LGSEG_ARTEFACTS",
                       root: Path | None = None) -> Path:
    """The folder a first-use build of ``kind`` (frame, vocab, text) goes to, made here:
    $LGSEG_ARTEFACTS/kind, else the user cache's. ArtefactError where someone else could
    write it: the lookups skipped a world-writable $LGSEG_ARTEFACTS, but the build wrote
    there anyway, following another user's symlinks at its .tmp names onto this user's
    files, and a watcher could swap the export between its write and its hash (audit
    round 19). OSError where it cannot be made. ``option``: what set the folder, for the
    message; ``root``: the folder above ``kind`` where not $LGSEG_ARTEFACTS or the cache's."""
    if root is None:
        env = os.environ.get("LGSEG_ARTEFACTS")
        root = Path(env) if env else _cache_root()
    root = Path(root)
    folder = root / kind

    def refuse(why: str):
        raise ArtefactError(f"not writing artefacts to {str(folder)[:200]}: someone else could "
                            f"write there ({why[:300]}); chmod go-w, or point {option} "
                            "at a folder of your own")

    # The root is judged before anything is made in it: made first, `-o /tmp/shared` (777)
    # got a `frame/` folder before it was refused. A root not there yet is made only in a
    # folder nobody else could write, or a sticky one (/tmp), where others cannot rename
    # what is not theirs; what is made is judged again below.
    if os.path.lexists(root):
        why = untrusted_reason(root)
    else:
        above = Path(os.path.abspath(root)).parent
        while not os.path.lexists(above) and above != above.parent:
            above = above.parent
        try:
            st = os.stat(above)
            # Sticky protects names from others, not from the folder's owner.
            sticky = bool(st.st_mode & stat.S_ISVTX) and st.st_uid in (os.getuid(), 0)
        except OSError:
            sticky = False
        why = None if sticky else untrusted_reason(above)
    # Another user's symlink on the path as given (the root itself, or a folder above it in
    # a sticky /tmp) passed: the judgement follows it to this user's folder, and its owner
    # can point it elsewhere between the check and the writes (audit round 20).
    why = why or _foreign_symlink(root)
    if why:
        refuse(why)
    root.mkdir(parents=True, exist_ok=True)
    # Judged and written as resolved once, so no link on the way can move the writes later;
    # a link another user made at the name between the check and mkdir is caught here.
    resolved = Path(os.path.realpath(root))
    why = _foreign_symlink(root)
    if why:
        refuse(why)
    root = resolved
    folder = root / kind
    why = untrusted_reason(root)
    if why:
        refuse(why)
    folder.mkdir(exist_ok=True)
    # The folder as the lookups judge it, and no other user's symlink at `kind`:
    # untrusted_reason follows it to a folder of this user's, and its owner can point it
    # elsewhere later (review of audit 19). untrusted_reason, not untrusted(): its warning
    # advises $LGSEG_ARTEFACTS, which is not what set the folder for `lgseg artefacts -o`.
    why = untrusted_reason(folder) or _foreign_symlink(folder)
    if why:
        refuse(why)
    return folder


def code_digest() -> str:
    """sha256 of the source that defines the exported graph (model package, frame path,
    exporter), read as files so that computing it imports nothing."""
    runtime = Path(__file__).resolve().parent
    files = [runtime / "frame_path.py", runtime / "export.py", *sorted((runtime.parent / "model").glob("*.py"))]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def frame_name(checkpoint_sha: str, size: tuple[int, int], precision: str) -> str:
    return f"lgseg_{checkpoint_sha[:16]}_{int(size[0])}x{int(size[1])}_{precision}.onnx"


def read_manifest(onnx_path: Path) -> dict:
    return read_manifest_file(onnx_path, onnx_path.with_suffix(".json"), FORMAT, ArtefactError,
                              _MAX_MANIFEST)


def write_manifest(onnx_path: Path, fields: dict) -> dict:
    manifest = {"format": FORMAT, **fields, "onnx_sha256": sha256_file(onnx_path)}
    tmp = onnx_path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, onnx_path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def verify_frame(onnx_path: Path, checkpoint_sha: str, size, precision: str) -> dict:
    """The manifest if ``onnx_path`` is the intact frame path of this checkpoint at this
    size and precision; ArtefactError saying why not otherwise."""
    manifest = read_manifest(onnx_path)
    want = {"kind": "frame-path", "checkpoint_sha256": checkpoint_sha,
            "size": [int(size[0]), int(size[1])], "precision": precision}
    wrong = [f"{k}: {manifest.get(k)!r} != {v!r}" for k, v in want.items() if manifest.get(k) != v]
    if wrong:
        raise ArtefactError(f"{onnx_path}: made from another source ({'; '.join(wrong)})")
    if precision == "int8":
        from .quantize import RECIPE

        calibration = manifest.get("calibration")
        # not a dict: "calibration": "x" raised AttributeError past every handler (audit round 17)
        if not isinstance(calibration, dict) or calibration.get("recipe") != RECIPE:
            raise ArtefactError(f"{onnx_path}: quantised by another recipe (stale)")
    check_artefact_size(onnx_path, ArtefactError)
    if sha256_file(onnx_path) != manifest.get("onnx_sha256"):
        raise ArtefactError(f"{onnx_path}: bytes fail their recorded sha256 (damaged)")
    return manifest


# A first-use build (a net size or model not in models/artefacts) writes about 25 MB per size
# and model: a peer that set size after size and drove the lifecycle filled the disk (1,024
# sizes are valid). The write folder keeps the most recently used files: 4 per size (fp32 and
# int8 of the street and the rooms model) times LGSEG_CACHE_KEEP, so the 8 most recent sizes.
# The shipped models/artefacts folder is never pruned, and only files a first-use build wrote
# are (their manifest says "first_use"): the write folder is $LGSEG_ARTEFACTS where it is set,
# the folder `lgseg artefacts -o` fills on purpose, and a peer's new sizes deleted those files
# (probe round 12). The user cache, where $LGSEG_ARTEFACTS is not set, holds first-use
# builds only, so every file there counts, also those that releases before the mark wrote
# (older model code: never served again, and never pruned before).
FRAME_FILES_PER_SIZE = 4


def built_on_first_use(onnx_path: Path) -> bool:
    """Whether a first-use build wrote this file (its manifest says so); False when unsure."""
    try:
        return read_manifest(onnx_path).get("first_use") is True
    except (ArtefactError, OSError, ValueError):
        return False


class ModelSource:
    """A checkpoint (or a config with untrained weights) as the backends need it: an ONNX
    file per (size, precision), read from the artefact directories without torch, or the
    torch network, loaded only when something asks for it."""

    def __init__(self, checkpoint: str | None, cfg, meta: dict | None = None,
                 calibration: str | None = None, sha256: str | None = None,
                 identity: tuple | None = None):
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.cfg = cfg
        self.meta = meta or {}
        self.calibration = calibration
        self._net = None
        self._sha: str | None = sha256
        self._identity = identity   # file_identity() of the file cfg, meta and sha came from
        self._verified: dict[str, str] = {}   # path -> the onnx_sha256 its manifest records

    def verified_sha256(self, path) -> str | None:
        """The recorded sha256 of a file onnx() verified or built (its bytes must still
        match when read), None for one it did not."""
        return self._verified.get(str(path))

    @property
    def checkpoint_sha256(self) -> str | None:
        if self._sha is None and self.checkpoint:
            self._sha = sha256_file(self.checkpoint)
        return self._sha

    @property
    def net(self):
        """The eager torch network (imports torch on first access)."""
        if self._net is None:
            from lgseg_ros.model import build_model

            if self.checkpoint:
                self._net = self._load_pinned()
            else:
                self._net = build_model(self.cfg)
            self._net.eval()
        return self._net

    def _load_pinned(self):
        """The network from the very file model_source() read. load_checkpoint opens a path:
        given the checkpoint's name, a file swapped in and back out between two checks of
        that name (a symlink flipped, then rolled back) loaded its weights under this one's
        config, vocabulary and sha256. The file is opened once here, its identity compared
        with the one recorded, and its tensors loaded through /proc/self/fd/N, which opens
        that same file whatever its name now points to. Where /proc/self/fd is unusable,
        the name is checked unchanged before and after the load instead."""
        from lgseg_ros.model import load_checkpoint

        if self._identity is None:
            return load_checkpoint(self.checkpoint)[0]
        try:
            fd = os.open(self.checkpoint, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise self._changed(exc.strerror or "cannot be opened") from None
        def unchanged() -> bool:
            return file_identity(os.fstat(fd)) == self._identity

        try:
            if not unchanged():
                raise self._changed("another file or other bytes now")
            pinned = f"/proc/self/fd/{fd}"
            try:
                usable = file_identity(os.stat(pinned)) == self._identity
            except OSError:
                usable = False
            if not usable:                  # no /proc: the name, before and after
                self._check_unchanged()
                net = load_checkpoint(self.checkpoint)[0]
                self._check_unchanged()
                return net
            try:
                net = load_checkpoint(pinned)[0]
            except CheckpointError as exc:
                if not unchanged():   # written in place meanwhile
                    raise self._changed("written while its tensors were read") from None
                named = re.sub(re.escape(pinned) + r"(?!\d)", lambda _: self.checkpoint, str(exc))
                raise CheckpointError(named) from None
            if not unchanged():
                raise self._changed("written while its tensors were read")
            return net
        finally:
            os.close(fd)

    def _changed(self, how: str) -> "CheckpointChanged":
        return CheckpointChanged(f"{str(self.checkpoint)[:300]} changed since its header and sha256 were "
                                 f"read ({how[:100]}); not loading its tensors under them, "
                                 "load it again")

    def _check_unchanged(self) -> None:
        try:
            now = file_identity(os.stat(self.checkpoint))
        except OSError as exc:
            raise self._changed(exc.strerror or "cannot be read") from None
        if now != self._identity:
            raise self._changed("another file or other bytes now")

    @property
    def net_loaded(self) -> bool:
        return self._net is not None

    def onnx(self, size: tuple[int, int], precision: str = "fp32", allow_build: bool = True) -> Path:
        """A verified frame-path ONNX file for this model at ``size``; built on a miss where
        that is possible (fp32/fp16 export needs torch, int8 needs the fp32 file and
        calibration frames), ArtefactError otherwise."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        size = (int(size[0]), int(size[1]))
        if not self.checkpoint:
            # Untrained weights have no stable identity to key a file by: export per run.
            if precision == "int8":
                raise ArtefactError("int8 needs a trained checkpoint (calibration of random weights "
                                    "would measure nothing)")
            from .export import cached_export

            with BUILD_LOCK:
                return cached_export(self.net, size, self.cfg.text_dim, precision=precision)
        sha = self.checkpoint_sha256
        name = frame_name(sha, size, precision)
        found, reasons = self._find(name, sha, size, precision, allow_build)
        if found is not None:
            return found
        if not allow_build:
            raise ArtefactError(f"no frame-path ONNX for {self.checkpoint} at {size[0]}x{size[1]} "
                                f"{precision}; {NO_BUILD_NOW}: `lgseg artefacts --checkpoint "
                                f"{self.checkpoint} --size {size[0]} {size[1]} --precision "
                                f"{precision}`, or restart the node with these parameters "
                                f"({'; '.join(reasons)[:400]})")
        with BUILD_LOCK:
            # Another thread may have built it while this one waited for the lock.
            found, reasons = self._find(name, sha, size, precision, allow_build)
            if found is not None:
                return found
            refused = [r for r in reasons if not r.endswith(": not built")]
            if refused:   # a file was there and is not served: say why (capped)
                log.warning("not serving a cached frame path: %s", "; ".join(refused)[:600])
            out = artefact_write_dir("frame") / name
            built = self.build(out, size, precision, reasons, first_use=True)
            prune_cache(out.parent, "lgseg_*.onnx", keep=FRAME_FILES_PER_SIZE * cache_keep(),
                        protect=built, companions=(".json",),
                        only=built_on_first_use if os.environ.get("LGSEG_ARTEFACTS") else None)
            return built

    def _find(self, name: str, sha: str, size: tuple[int, int], precision: str,
              allow_build: bool) -> tuple[Path | None, list[str]]:
        """The first verified file called ``name`` in the artefact folders, and why the
        others were not served."""
        reasons = []
        code = code_digest()
        for folder in artefact_dirs():
            path = folder / "frame" / name
            why = trusted_file(path)
            if why:
                reasons.append(why)
                continue
            # Marked used before it is read (the cache keeps the most recently used files, and
            # another process's prune keeps one used in the last PRUNE_GRACE_S), so it does not
            # vanish while this one verifies and loads it; a missing file is a no-op.
            mark_used(path)
            try:
                manifest = verify_frame(path, sha, size, precision)
            except ArtefactError as exc:
                reasons.append(str(exc))
                continue
            except OSError as exc:    # vanished meanwhile (another node's prune): not served
                reasons.append(f"{path}: {str(exc)[:200]}")
                continue
            if manifest.get("code_sha256") != code:
                if allow_build and torch_installed():
                    reasons.append(f"{path}: exported by other model code")
                    continue
                log.warning("%s was exported by another version of the model code; serving it "
                            "(rebuild with `lgseg artefacts` where torch is installed)", path)
            self._verified[str(path)] = manifest["onnx_sha256"]
            return path, reasons
        return None, reasons

    def build(self, out: Path, size: tuple[int, int], precision: str, reasons=(),
              first_use: bool = False) -> Path:
        """Build ``out``; ``first_use`` marks it as the cache's (prunable), not a file built
        on purpose (`lgseg artefacts`)."""
        with BUILD_LOCK:
            return self._build(out, size, precision, reasons, first_use)

    def _build(self, out: Path, size: tuple[int, int], precision: str, reasons=(),
               first_use: bool = False) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        fields = {"kind": "frame-path", "checkpoint_sha256": self.checkpoint_sha256,
                  "checkpoint_name": Path(self.checkpoint).name, "size": list(size),
                  "precision": precision, "code_sha256": code_digest(), "config": self.cfg.name}
        if first_use:
            fields["first_use"] = True
        if precision == "int8":
            from .quantize import quantize_frame_path

            fp32 = self.onnx(size, "fp32")
            info = quantize_frame_path(fp32, out, self, calibration=self.calibration)
            fields.update(fp32_sha256=sha256_file(fp32), calibration=info)
        else:
            if not torch_installed():
                raise ArtefactError(
                    f"no frame-path ONNX for {self.checkpoint} at {size[0]}x{size[1]} {precision} "
                    f"({'; '.join(reasons) or 'none built'}), and exporting one needs torch: run "
                    "`lgseg artefacts` where torch is installed and copy models/artefacts here")
            log.warning("exporting %s for %dx%d %s (once; later starts read the file)",
                        self.checkpoint, size[0], size[1], precision)
            if _EXPORT_IN_CHILD and "torch" not in sys.modules and not self.net_loaded:
                _export_in_child(self.checkpoint, out, size, precision)
            else:
                from .export import export_onnx

                export_onnx(self.net, out, size, self.cfg.text_dim, precision=precision)
            # The export read the checkpoint again by name: one replaced meanwhile (a deploy,
            # a training run writing the same path) was exported and filed under the old
            # file's sha256, and served to it as verified later (probe round 14).
            if sha256_file(self.checkpoint) != self.checkpoint_sha256:
                out.unlink(missing_ok=True)
                raise ArtefactError(f"{self.checkpoint} changed while it was exported; "
                                    "nothing was cached, load it again")
        self._verified[str(out)] = write_manifest(out, fields)["onnx_sha256"]
        return out


# Set by the node (export_in_child): an export on a cache miss runs torch in a process of its
# own, so torch and the eager network do not stay in the node. A peer that set net_height /
# net_width and drove cleanup + configure made the node export in-process: RSS 283 -> 1031 MB,
# kept for the node's life (probe round 11). In-process where torch is loaded already (the
# torch backend) or for tools (`lgseg artefacts`), as before.
_EXPORT_IN_CHILD = False
# An export takes seconds (torch import, trace); on a loaded machine a minute at most.
CHILD_EXPORT_TIMEOUT_S = 600


def export_in_child(enabled: bool = True) -> None:
    global _EXPORT_IN_CHILD
    _EXPORT_IN_CHILD = bool(enabled)


def exports_in_child() -> bool:
    return _EXPORT_IN_CHILD


_CHILD_EXPORT = """
import sys
from lgseg_ros.runtime.artefacts import model_source
from lgseg_ros.runtime.export import export_onnx
checkpoint, out, h, w, precision = sys.argv[1:6]
source, _ = model_source(checkpoint)
export_onnx(source.net, out, (int(h), int(w)), source.cfg.text_dim, precision=precision)
"""


def _export_in_child(checkpoint: str, out: Path, size: tuple[int, int], precision: str) -> None:
    """export_onnx of ``checkpoint`` into ``out``, run by this Python in a child process
    (same environment, so the same package and artefact folders). The caller verifies and
    records what it wrote, as for an export of its own."""
    import subprocess

    from lgseg_ros.labels import shown

    cmd = [sys.executable, "-c", _CHILD_EXPORT, str(checkpoint), str(out), str(size[0]), str(size[1]),
           precision]
    try:
        # A stop raised here while it waits (the node's SIGINT / SIGTERM) kills the child.
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CHILD_EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ArtefactError(f"exporting {checkpoint} for {size[0]}x{size[1]} {precision} took "
                            f"more than {CHILD_EXPORT_TIMEOUT_S} s") from None
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or [""]
        raise ArtefactError(f"exporting {checkpoint} for {size[0]}x{size[1]} {precision} failed "
                            f"(exit {done.returncode}): {shown(tail[0], 300)}")


def _vocab_key(checkpoint_sha: str, encoder, names) -> dict:
    return {"kind": "vocabulary-embeddings", "checkpoint_sha256": checkpoint_sha,
            "text_onnx_sha256": encoder.onnx_sha256, "template": encoder.template,
            "names_sha256": hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()}


def preload_vocabulary(reporter, encoder, checkpoint_sha: str | None) -> str:
    """Give the grounding reporter its vocabulary embeddings from the artefact cache, or
    encode them now and store them there. Only for the ONNX MiniLM (whose graph hash keys
    the file); returns what happened, for the log."""
    import numpy as np

    names = reporter.names
    if not names or not checkpoint_sha or not getattr(encoder, "onnx_sha256", None):
        return "not cached"
    key = _vocab_key(checkpoint_sha, encoder, names)
    file = f"vocab_{checkpoint_sha[:16]}_{encoder.onnx_sha256[:16]}_{key['names_sha256'][:8]}.npy"
    for folder in artefact_dirs():
        path = folder / "vocab" / file
        if trusted_file(path):
            continue
        try:
            manifest = read_manifest(path)
            if any(manifest.get(k) != v for k, v in key.items()):
                continue
            if path.stat().st_size > 64 + 4 * len(names) * 4096:
                continue
            emb = np.load(io.BytesIO(read_artefact(path, manifest)), allow_pickle=False)
            if emb.dtype == np.float32 and reporter.use_vocabulary_embeddings(names, emb):
                return f"loaded {path}"
        except (ArtefactError, OSError, ValueError):
            continue
    emb = reporter.vocabulary_embeddings()
    try:
        out = artefact_write_dir("vocab") / file
        with BUILD_LOCK:   # two segmenters of one process write the same .tmp names
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp.npy")
            try:
                np.save(tmp, np.ascontiguousarray(emb, np.float32), allow_pickle=False)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
            write_manifest(out, key)   # "onnx_sha256" there is this file's own sha256
    except (OSError, ArtefactError) as exc:   # a read-only cache still runs; the next start encodes again
        log.info("could not cache the vocabulary embeddings: %s", exc)
    return f"encoded {len(names)} names"


def file_identity(st: os.stat_result) -> tuple:
    """What changes when a file is replaced (rename: another inode) or written in place
    (size, mtime; ctime, which no user can set back)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _HashingReader:
    """A file's read() that also feeds a sha256, so a parser's bytes are the bytes hashed."""

    def __init__(self, f):
        self.f, self.digest, self.count = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        self.count += len(data)
        return data


def read_checkpoint(path) -> tuple:
    """(config, extra metadata, sha256, file_identity) of a checkpoint, all from one read of
    one open file: the header was read by one open and the sha256 by another, so a file
    replaced in between (a deploy, a training run saving to the same path) was filed and
    verified under the new file's sha256 with the old one's config and vocabulary. The
    header is checked (sizes bounded) before the rest is hashed, streamed, not held.
    Here, not in model/checkpoint.py, whose bytes are part of code_digest()."""
    from lgseg_ros.model.checkpoint import _header_from, _metadata_of, _open_checkpoint

    path = Path(path)
    with _open_checkpoint(path) as f:
        st = os.fstat(f.fileno())
        reader = _HashingReader(f)
        header, _ = _header_from(reader, path, st.st_size)
        cfg, meta = _metadata_of(header, path)
        while reader.read(1 << 20):
            pass
        if reader.count != st.st_size or file_identity(os.fstat(f.fileno())) != file_identity(st):
            raise CheckpointChanged(f"{str(path)[:300]} changed while it was read; load it again")
    return cfg, meta, reader.digest.hexdigest(), file_identity(st)


def model_source(checkpoint: str | None, config: str | None = None,
                 calibration: str | None = None) -> tuple["ModelSource", bool]:
    """(ModelSource, untrained) from one read of a checkpoint (its header parsed, the whole
    file hashed; no torch, no tensors built) or a config name."""
    from lgseg_ros.model.configs import get_config

    if checkpoint:
        cfg, meta, sha, identity = read_checkpoint(checkpoint)
        if config and config != cfg.name:
            log.warning("config %r ignored: checkpoint %s holds config %r", config, checkpoint, cfg.name)
        return ModelSource(checkpoint, cfg, meta, calibration, sha, identity), False
    return ModelSource(None, get_config(config or "lite-minilm"), {}, calibration), True


def default_output_dir() -> Path:
    from lgseg_ros.resources import SOURCE_ROOT

    return SOURCE_ROOT / "models" / "artefacts"


def build_all(checkpoint: str | None, sizes, precisions, output: Path,
              calibration: str | None = None) -> dict:
    """Every file a torch-free run needs for ``checkpoint`` into ``output``; verified files
    already there are kept. Needs torch (export) and, for int8, CamVid train frames."""
    import time

    from lgseg_ros.runtime.segmenter import default_checkpoint_path
    from lgseg_ros.text.onnx_minilm import ensure_minilm_onnx

    # The same judgement as a first-use build's: -o /tmp/shared (mode 777) wrote there with
    # no check, so another user's symlinks at the .tmp names led the writes onto this
    # user's files, and a file swapped after its write was filed under its sha256.
    for kind in ("frame", "text", "vocab"):
        artefact_write_dir(kind, "-o/--output", root=Path(output))
    # Only once the folder passed: set before, a refused -o stayed this process's
    # $LGSEG_ARTEFACTS, searched first by what it loaded next.
    os.environ["LGSEG_ARTEFACTS"] = str(output)   # searched first and written to
    checkpoint = checkpoint or default_checkpoint_path()
    if not checkpoint:
        raise ArtefactError("no checkpoint given and the shipped model is not installed")
    source, _ = model_source(checkpoint, calibration=calibration)
    result = {"checkpoint": str(checkpoint), "checkpoint_sha256": source.checkpoint_sha256,
              "output": str(output), "files": {}}
    start = time.perf_counter()
    if source.cfg.text_encoder == "minilm":
        path, _ = ensure_minilm_onnx(directory=output / "text")
        result["files"]["text"] = {"path": str(path), "mb": round(path.stat().st_size / 1e6, 1)}
    for size in sizes:
        for precision in precisions:
            out = output / "frame" / frame_name(source.checkpoint_sha256, size, precision)
            try:
                verify_frame(out, source.checkpoint_sha256, size, precision)
                if read_manifest(out).get("code_sha256") != code_digest():
                    raise ArtefactError("other model code")
            except ArtefactError:
                source.build(out, tuple(size), precision)
            result["files"][f"{size[0]}x{size[1]}_{precision}"] = {
                "path": str(out), "mb": round(out.stat().st_size / 1e6, 1)}
    if source.cfg.text_encoder == "minilm":
        from lgseg_ros.runtime.grounding import GroundingReporter, vocabulary_from_metadata
        from lgseg_ros.text.onnx_minilm import OnnxMiniLMEncoder

        encoder = OnnxMiniLMEncoder(template=source.cfg.prompt_template,
                                    onnx_path=result["files"]["text"]["path"])
        vocab, distractors = vocabulary_from_metadata(source.meta)
        result["vocabulary"] = preload_vocabulary(GroundingReporter(vocab, encoder, distractors),
                                                  encoder, source.checkpoint_sha256)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _net_side(text: str) -> int:
    """A side the node accepts (its net_height / net_width range): 0 ended in a torch
    traceback after 1.2 GB of imports, and nothing bounded a huge one (audit round 19)."""
    import argparse

    from lgseg_ros.ros.params import NET_SIZE_RANGE

    lo, hi, step = NET_SIZE_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi or value % step:
        raise argparse.ArgumentTypeError(f"--size {text[:40]!r}: each side is {lo} to {hi}, "
                                         f"a multiple of {step}")
    return value


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="lgseg artefacts",
        description="Build the ONNX files a torch-free run needs (frame path per size and "
                    "precision, MiniLM text encoder), verified against their sources.")
    parser.add_argument("--checkpoint", help="safetensors checkpoint (default: the shipped model)")
    parser.add_argument("--size", nargs=2, type=_net_side, action="append", metavar=("H", "W"),
                        help="network size, each side 32 to 1024 in steps of 32 (as the node's "
                             "net_height / net_width); repeatable (default 384 480)")
    parser.add_argument("--precision", action="append", choices=PRECISIONS,
                        help="repeatable (default: fp32 and int8)")
    parser.add_argument("--calibration", help="folder of CamVid *train* frames for int8 "
                        "(default: $LGSEG_CAMVID/train or ../shared/datasets/camvid/train)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output folder (default: models/artefacts in the source tree)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = build_all(args.checkpoint, args.size or [(384, 480)],
                           args.precision or ["fp32", "int8"], args.output or default_output_dir(),
                           args.calibration)
    except (ArtefactError, CheckpointError, OSError, ValueError) as exc:
        print(f"lgseg artefacts: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
