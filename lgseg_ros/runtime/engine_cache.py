"""On-disk cache of built TensorRT engines, free of any TensorRT import.

Building an engine takes minutes and is only valid for one (ONNX model, TensorRT version,
GPU, precision, input shape). A cache file therefore carries, in front of the serialized
engine, a JSON header with the full key and the sha256 of the engine bytes. Loading checks
both and reports why a file cannot be served (missing, foreign format, truncated, corrupt,
built for another key); the caller then rebuilds. A stale or damaged engine is never handed
to the runtime: deserialising one can crash the process or silently compute garbage.

File layout (all integers little-endian):
    8 bytes   magic  b"LGSEGTRT"
    4 bytes   format version (uint32)
    4 bytes   header length N (uint32)
    N bytes   header, UTF-8 JSON: {"key": {...}, "key_digest": str, "engine_sha256": str,
              "engine_size": int, "created": float, "origin_hmac": str}
    rest      engine bytes (exactly engine_size of them)

Origin (issue 20, item 5). A checksum is not proof of origin: anyone who can write a file
can write a matching sha256 into its header. So an engine is served only when
  - the key ties it to the sha256 of the exact ONNX it is built from (the verified frame
    path, runtime/artefacts.py), the TensorRT version, the GPU and compute capability and
    the build options, and the engine bytes match their sha256;
  - it was written by this cache: ``origin_hmac`` is an HMAC-SHA256 of the key digest and
    the engine sha256 under a secret kept in the cache directory (``ORIGIN_SECRET``, mode
    600, made on first use), so a file planted or copied in from elsewhere is rebuilt;
  - the directory is private to this user (``check_private_dir``; the default one is made
    mode 700) and the file is a regular file of this user, not a symlink, that nobody else
    may write.
What the engine computes cannot be checked without a GPU; the node builds every engine it
serves itself, from a verified ONNX file, in a directory only its user can write.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import stat
import struct
import tempfile
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

MAGIC = b"LGSEGTRT"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")
# A header is a few hundred bytes; anything far larger means the length field is garbage.
_MAX_HEADER = 1 << 20
# The per-directory secret that signs what this cache wrote (see the module docstring).
ORIGIN_SECRET = ".lgseg_origin_key"
_SECRET_BYTES = 32


def read_manifest_file(onnx_path: Path, manifest_path: Path, fmt: str, error: type,
                       max_bytes: int = 1 << 16) -> dict:
    """The JSON manifest beside a cached ONNX file, bounded in size and of format ``fmt``;
    ``error`` (an exception class) saying why not. The artefact and text-encoder caches
    both read their manifests through this."""
    if not onnx_path.is_file() or not manifest_path.is_file():
        raise error(f"{onnx_path}: not built")
    if manifest_path.stat().st_size > max_bytes:
        raise error(f"{manifest_path}: too large to be a manifest")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        # RecursionError: 30,000 nested brackets (60 KB) escaped as no cache error, so the
        # shipped file in the next folder was never tried (audit round 17)
        raise error(f"{manifest_path}: unreadable manifest ({str(exc)[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise error(f"{manifest_path}: unknown manifest format")
    return manifest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# The largest artefact read whole into memory (the shipped frame paths are 8-18 MB, the
# MiniLM encoder 45 MB): a size check before the read, not a gigabyte allocation.
MAX_ARTEFACT_BYTES = 512 << 20


# The largest TensorRT engine file read (the shipped model's are tens of MB).
MAX_ENGINE_BYTES = 2 << 30


def check_artefact_size(path: str | os.PathLike, error: type = ValueError) -> None:
    """Refuse a file larger than any artefact before hashing it: a 4 GiB sparse file (64 MB
    on disk) under a cached name was hashed whole, 24 s of configure, then refused for its
    size anyway (audit round 17)."""
    size = os.stat(path).st_size
    if size > MAX_ARTEFACT_BYTES:
        raise error(f"{path}: {size} bytes, more than the {MAX_ARTEFACT_BYTES} an artefact may have")


def read_verified_bytes(path: str | os.PathLike, sha256: str, error=ValueError) -> bytes:
    """The bytes of ``path`` if they hash to ``sha256``, read once. The caller hands these
    same bytes on (ONNX Runtime, numpy): hashing the file by name and then opening the name
    again served a file swapped in between (probe round 7, 3 runs of 3)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        # The file opened, not the name checked earlier: a folder swapped in between (its
        # parent writable by others) served another user's file (probe round 8).
        why = _stat_untrusted(st, path)
        if why:
            raise error(f"not reading {why}")
        if size > MAX_ARTEFACT_BYTES:
            raise error(f"{path}: {size} bytes, more than the {MAX_ARTEFACT_BYTES >> 20} MB an "
                        "artefact may have")
        data = f.read(MAX_ARTEFACT_BYTES + 1)
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise error(f"{path}: bytes fail their recorded sha256 (damaged, or changed while read)")
    return data


def _users_own_group(gid: int) -> bool:
    """A user-private group (Debian/Ubuntu's default with umask 002: group and user share a
    name, no other members): group write there is the user's own write."""
    try:
        import grp
        import pwd

        group = grp.getgrgid(gid)
        return (gid == os.getgid() and not group.gr_mem
                and group.gr_name == pwd.getpwuid(os.getuid()).pw_name)
    except (ImportError, KeyError, OSError):
        return False


def untrusted_reason(path: str | os.PathLike) -> str | None:
    """Why files read from ``path`` (a directory or a file) could have been put there by
    someone else, or None. Trusted: owned by this user or root, writable by nobody else
    (group write only in the user's own private group). A folder anyone can write (a
    /tmp path in $LGSEG_ARTEFACTS) let a peer plant another model's graph under the
    expected name, with a manifest to match (probe round 7)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    why = _stat_untrusted(st, path)
    if why:
        return why
    # Every folder above it too, on the path as given and as resolved: a trusted folder
    # inside one that others can write can be swapped for theirs (probe round 8, 7 lookups
    # in 3,000 served the other user's file). A sticky folder (/tmp) is fine above: others
    # cannot rename or remove what is not theirs there.
    given = Path(os.path.abspath(path))
    for folder in dict.fromkeys([*given.parents, *Path(os.path.realpath(path)).parents]):
        try:
            up = os.stat(folder)
        except OSError as e:
            return f"{folder}: {e.strerror}"
        if up.st_mode & stat.S_ISVTX and up.st_uid in (os.getuid(), 0):
            continue   # sticky: others cannot rename what is not theirs (its owner can)
        why = _stat_untrusted(up, folder)
        if why:
            return f"{path}: the folder above it, {why}"
    return None


def _stat_untrusted(st: os.stat_result, path) -> str | None:
    if hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0):
        return f"{path} belongs to user {st.st_uid}, neither this user ({os.getuid()}) nor root"
    if st.st_mode & stat.S_IWOTH:
        return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_mode & stat.S_IWGRP and not _users_own_group(st.st_gid):
        return f"{path} is writable by group {st.st_gid} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT engine's validity depends on.

    ``input_shape`` is the fixed image shape (1, 3, H, W); ``k_profile`` the (min, opt, max)
    number of labels the engine accepts and ``text_dim`` the embedding width D.
    ``precision`` is the precision the engine was actually built in (for a strongly typed
    build: the ONNX graph's, read from the file, not the one asked for) and ``build_mode``
    how that precision came about ("strongly-typed"). Files written before build_mode
    existed lack the field and are rebuilt: they were weakly typed builds.
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    input_shape: tuple[int, ...]
    k_profile: tuple[int, int, int] = (1, 16, 255)
    text_dim: int = 0
    build_mode: str = ""

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; normalise so equality survives a reload.
        object.__setattr__(self, "compute_capability", tuple(int(v) for v in self.compute_capability))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "k_profile", tuple(int(v) for v in self.k_profile))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"engine key lacks fields {sorted(missing)}")
        return cls(**{k: data[k] for k in names})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        # Readable parts for a human browsing the cache; the digest makes it unique.
        h, w = self.input_shape[-2:]
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu_name).strip("-")[:32] or "gpu"
        return f"lgseg_{h}x{w}_{self.precision}_{gpu}_trt{self.trt_version}_{self.digest()[:16]}.engine"


class CacheMiss(Exception):
    """Why a cache file cannot be served; the message is meant for the log."""


def origin_hmac(secret: bytes, key_digest: str, engine_sha256: str) -> str:
    return hmac.new(secret, f"{key_digest}:{engine_sha256}".encode(), hashlib.sha256).hexdigest()


def write_engine(path: str | os.PathLike, key: EngineKey, engine: bytes,
                 secret: bytes | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash mid-write never leaves a torn file.
    ``secret``: the cache's origin secret, which signs the file (EngineCache passes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = bytes(engine)
    engine_sha = hashlib.sha256(engine).hexdigest()
    fields = {
        "key": key.to_dict(),
        "key_digest": key.digest(),
        "engine_sha256": engine_sha,
        "engine_size": len(engine),
        "created": time.time(),
    }
    if secret is not None:
        fields["origin_hmac"] = origin_hmac(secret, key.digest(), engine_sha)
    header = json.dumps(fields, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
            f.write(header)
            f.write(engine)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a cache file, or CacheMiss saying why there is none."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                raise CacheMiss(f"{path}: truncated ({len(prefix)} bytes, no complete prefix)")
            magic, version, header_len = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise CacheMiss(f"{path}: not an lgseg engine cache file (bad magic {magic!r})")
            if version != FORMAT_VERSION:
                raise CacheMiss(f"{path}: cache format {version}, this code reads {FORMAT_VERSION}")
            if header_len > _MAX_HEADER:
                raise CacheMiss(f"{path}: corrupt header length {header_len}")
            raw = f.read(header_len)
    except FileNotFoundError:
        raise CacheMiss(f"{path}: no cached engine") from None
    if len(raw) < header_len:
        raise CacheMiss(f"{path}: truncated header ({len(raw)} of {header_len} bytes)")
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CacheMiss(f"{path}: corrupt header ({str(exc)[:200]})") from None
    if not isinstance(header, dict):   # a header of `5` raised TypeError past CacheMiss
        raise CacheMiss(f"{path}: corrupt header (not an object)")
    for field in ("key", "key_digest", "engine_sha256", "engine_size"):
        if field not in header:
            raise CacheMiss(f"{path}: header lacks {field!r}")
    return header


def check_own_file(path: Path) -> None:
    """CacheMiss unless ``path`` is a regular file (not a symlink) of this user that
    nobody else may write: a cache file is model code."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise CacheMiss(f"{path}: no cached engine") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise CacheMiss(f"{path}: not a regular file (a symlink or special file is never served)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheMiss(f"{path}: belongs to user {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheMiss(f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def read_engine(path: str | os.PathLike, key: EngineKey, secret: bytes | None = None) -> bytes:
    """The engine bytes if the file is intact and was built for exactly ``key``; with
    ``secret``, also only if this cache wrote it (its origin HMAC verifies) and the file is
    this user's own (check_own_file).

    Raises CacheMiss with the reason otherwise; never returns unverified bytes.
    """
    path = Path(path)
    if secret is not None:
        check_own_file(path)
    header = read_header(path)
    try:
        stored_key = EngineKey.from_dict(header["key"])
    except (TypeError, ValueError) as exc:
        raise CacheMiss(f"{path}: unreadable key in header ({exc})") from None
    if stored_key != key:
        diffs = [f"{name}: cached {getattr(stored_key, name)!r} != wanted {getattr(key, name)!r}"
                 for name in (f.name for f in dataclasses.fields(EngineKey))
                 if getattr(stored_key, name) != getattr(key, name)]
        raise CacheMiss(f"{path}: stale engine ({'; '.join(diffs)})")
    if header["key_digest"] != key.digest():
        raise CacheMiss(f"{path}: key digest mismatch (header edited or corrupt)")
    try:
        size = int(header["engine_size"])
    except (TypeError, ValueError):
        raise CacheMiss(f"{path}: unreadable engine_size in header") from None
    with open(path, "rb") as f:
        _, _, header_len = _PREFIX.unpack(f.read(_PREFIX.size))
        # The file's size before its bytes: a 4 GiB sparse file under an engine's name was
        # read whole into memory, then refused for its length (audit round 17).
        on_disk = os.fstat(f.fileno()).st_size - _PREFIX.size - header_len
        if size < 0 or size > MAX_ENGINE_BYTES or on_disk != size:
            raise CacheMiss(f"{path}: engine is {on_disk} bytes, header says {size} (truncated, "
                            f"padded, or over {MAX_ENGINE_BYTES})")
        f.seek(_PREFIX.size + header_len)
        engine = f.read(size + 1)
    if len(engine) != size:
        raise CacheMiss(f"{path}: engine is {len(engine)} bytes, header says {size} (truncated or padded)")
    if hashlib.sha256(engine).hexdigest() != header["engine_sha256"]:
        raise CacheMiss(f"{path}: engine bytes fail their sha256 (corrupt)")
    if secret is not None:
        stored = header.get("origin_hmac")
        want = origin_hmac(secret, header["key_digest"], header["engine_sha256"])
        if not isinstance(stored, str) or not hmac.compare_digest(stored, want):
            raise CacheMiss(f"{path}: not written by this cache (its origin signature "
                            f"{'is missing' if stored is None else 'does not verify'}); a "
                            "checksum alone is not proof of origin")
    return engine


class EngineCache:
    """A directory of engine files, one per key.

    ``get_or_build(key, build)`` serves a verified cached engine or calls ``build()`` (which
    returns serialized engine bytes), logging first that a build may take minutes, then
    stores the result. ``force_rebuild`` skips the lookup.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        # A named directory must exist already (the node creates none a parameter names);
        # the default one is made here, private. Either must be private to this user.
        if directory:
            self.directory = Path(directory)
        else:
            self.directory = default_cache_dir()
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_dir(self.directory, "TensorRT engine cache directory")
        self._secret: bytes | None = None

    @property
    def secret(self) -> bytes:
        """This directory's origin secret, made (mode 600) on first use."""
        if self._secret is None:
            self._secret = load_origin_secret(self.directory)
        return self._secret

    def path_for(self, key: EngineKey) -> Path:
        return self.directory / key.filename()

    def load(self, key: EngineKey) -> Optional[bytes]:
        try:
            return read_engine(self.path_for(key), key, self.secret)
        except CacheMiss as miss:
            log.info("engine cache miss: %s", miss)
            return None

    def get_or_build(self, key: EngineKey, build, force_rebuild: bool = False,
                     source: str | os.PathLike | None = None) -> tuple[bytes, bool]:
        """Return (engine bytes, built_now). ``source``: the ONNX file ``build`` reads; it
        must still hash to ``key.onnx_sha256`` after the build (a file swapped while the
        builder read it would otherwise be cached under the verified file's key).
        ``build`` None: the caller may not build now; a miss raises CacheMiss with its reason."""
        path = self.path_for(key)
        if not force_rebuild:
            try:
                engine = read_engine(path, key, self.secret)
                log.info("using cached TensorRT engine %s", path)
                mark_used(path)
                return engine, False
            except CacheMiss as miss:
                reason = str(miss)
        else:
            reason = "force_rebuild requested"
        if build is None:
            # Before the "building" line: it announced minutes of build for one that the
            # node's later configure never starts.
            raise CacheMiss(reason)
        # What would refuse the write refuses the build: with force_rebuild an unsafe origin
        # secret was found only at the write, after the "building" line and minutes of build
        # for nothing, and a folder opened to others since the cache was made was written to.
        check_private_dir(self.directory, "TensorRT engine cache directory")
        secret = self.secret
        log.warning("building TensorRT engine for %dx%d %s (%s); this may take several minutes",
                    key.input_shape[-2], key.input_shape[-1], key.precision, reason)
        start = time.perf_counter()
        engine = bytes(build())
        if not engine:
            raise RuntimeError("TensorRT engine build returned no bytes")
        if source is not None and sha256_file(source) != key.onnx_sha256:
            raise RuntimeError(f"{source} changed while the engine was built from it (its sha256 "
                               "no longer matches the verified file); the engine is not cached")
        # Judged again at the write, minutes after the check above: a folder opened to
        # others while the engine was built was written into.
        check_private_dir(self.directory, "TensorRT engine cache directory")
        write_engine(path, key, engine, secret)
        log.warning("built TensorRT engine in %.1f s, cached at %s", time.perf_counter() - start, path)
        mark_used(path)
        prune_cache(self.directory, "lgseg_*.engine", protect=path)
        return engine, True


# Each model update, frame size or TensorRT upgrade adds a file (ONNX ~10-20 MB, an engine
# tens of MB); a robot updated for a year would fill its disk. The most recently used ones
# stay, which covers the cameras and models in use.
CACHE_KEEP_DEFAULT = 8
# A file used this recently is never pruned, however many newer ones there are: another
# process sharing the cache may have found it and be verifying or loading it, and a prune in
# between made that process's configure fail on a file that had vanished (probe round 12).
# Builds take seconds (an export ~10 s), so this keeps at most a few more files.
PRUNE_GRACE_S = 60.0


def cache_keep() -> int:
    """How many files each cache directory keeps: $LGSEG_CACHE_KEEP, else 8."""
    try:
        return max(1, int(os.environ.get("LGSEG_CACHE_KEEP", CACHE_KEEP_DEFAULT)))
    except ValueError:
        return CACHE_KEEP_DEFAULT


def mark_used(path: Path) -> None:
    """Record a cache hit as the access time (the modification time stays the build time)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:  # a read-only cache still serves; it just cannot be pruned well
        pass


def prune_cache(directory: str | os.PathLike, pattern: str, keep: int | None = None,
                protect: Path | None = None, companions: tuple[str, ...] = (),
                only=None) -> list[Path]:
    """Delete all but the `keep` most recently used files matching `pattern`; never `protect`
    (the file just built or served). Each file's `companions` (suffixes: its manifest) go with
    it. `only(path)`, where given, says which files are the cache's to delete at all (the
    others neither count nor go). Returns what was deleted."""
    keep = cache_keep() if keep is None else keep
    used = []
    for path in Path(directory).glob(pattern):
        if only is not None and not only(path):
            continue
        try:
            used.append((path.stat().st_atime_ns, path))
        except OSError:  # removed meanwhile by another process
            continue
    used.sort(reverse=True)
    removed = []
    recent = time.time_ns() - int(PRUNE_GRACE_S * 1e9)
    for atime, path in used[keep:]:
        if (protect is not None and path == protect) or atime >= recent:
            continue
        try:
            path.unlink()
            removed.append(path)
            for suffix in companions:
                path.with_suffix(suffix).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not prune cache file %s: %s", str(path)[:300], str(exc)[:300])
    if removed:
        log.info("pruned %d cache file(s) from %s, keeping the %d most recently used "
                 "(LGSEG_CACHE_KEEP)", len(removed), directory, keep)
    return removed


def load_origin_secret(directory: Path) -> bytes:
    """The secret in ``directory``/ORIGIN_SECRET, created (mode 600) when absent;
    refused (ValueError) when it is not this user's private regular file."""
    path = directory / ORIGIN_SECRET
    if not os.path.lexists(path):
        # Written whole under a temporary name (mkstemp: mode 600), then hard-linked into
        # place, which fails if a secret is there: a node starting at the same moment sees
        # no secret or all of it. Created in place, it was read empty and called damaged.
        fd, tmp = tempfile.mkstemp(prefix=ORIGIN_SECRET + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(_SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass    # the other node's secret won; this one uses it
        finally:
            os.unlink(tmp)
    st = path.lstat()
    if (not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077
            or (hasattr(os, "getuid") and st.st_uid != os.getuid())):
        raise ValueError(f"{path}: the engine cache's origin secret must be a regular file of "
                         f"this user with mode 600 (is {stat.S_IMODE(st.st_mode):o}); remove it "
                         "and the cached engines, they will be rebuilt")
    secret = path.read_bytes()
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"{path}: damaged origin secret ({len(secret)} bytes); remove it and "
                         "the cached engines, they will be rebuilt")
    return secret


def default_cache_dir() -> Path:
    base = os.environ.get("LGSEG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lgseg_ros")
    return Path(base) / "engines"


def check_private_dir(path: str | os.PathLike, what: str = "engine_cache_dir") -> Path:
    """Refuse a cache directory that others could write to (or that does not exist).

    Whatever is in the directory is loaded as model code (an ONNX graph, a TensorRT
    engine): a directory that another user or process can write lets them choose what the
    node runs. It must exist (the node creates no directory a parameter names), be a
    directory owned by this user, and not be writable by group or others. Raises
    ValueError naming ``what`` and the path."""
    path = Path(path)
    shown_path = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{what}={shown_path}: no such directory; create it (mode 700) first") from None
    except OSError as e:
        raise ValueError(f"{what}={shown_path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what}={shown_path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ValueError(f"{what}={shown_path} belongs to user {st.st_uid}, not to this user "
                         f"({os.getuid()}); a cache another user controls decides what the node runs")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(f"{what}={shown_path} is writable by group or others (mode "
                         f"{stat.S_IMODE(st.st_mode):o}); a file planted there would be loaded "
                         "as the model: chmod go-w it")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what}={shown_path}: this user cannot write to it")
    return path
