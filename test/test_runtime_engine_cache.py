"""Engine cache: a cached TensorRT engine is served only when intact and built for the key."""
import dataclasses
import json
import logging
import struct

import pytest

from lgseg_ros.runtime.engine_cache import (ORIGIN_SECRET, CacheMiss, EngineCache, EngineKey,
                                            read_engine, read_header, write_engine)

ENGINE = bytes(range(256)) * 64  # stands in for a serialized engine: opaque bytes


def make_key(**changes):
    key = EngineKey(onnx_sha256="ab" * 32, trt_version="10.9.0.34", gpu_name="NVIDIA H100 80GB HBM3",
                    compute_capability=(9, 0), precision="fp16", input_shape=(1, 3, 384, 480),
                    k_profile=(1, 16, 255), text_dim=384)
    return dataclasses.replace(key, **changes)


def test_good_file_round_trips(tmp_path):
    key = make_key()
    path = write_engine(tmp_path / "e.engine", key, ENGINE)
    assert read_engine(path, key) == ENGINE
    header = read_header(path)
    assert EngineKey.from_dict(header["key"]) == key
    assert header["engine_size"] == len(ENGINE)


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "cd" * 32), ("trt_version", "10.10.0.1"), ("gpu_name", "NVIDIA A100"),
    ("compute_capability", (8, 0)), ("precision", "fp32"), ("input_shape", (1, 3, 480, 640)),
    ("k_profile", (1, 16, 1024)), ("text_dim", 512), ("build_mode", "strongly-typed")])
def test_stale_key_is_refused_and_names_the_difference(tmp_path, field, value):
    path = write_engine(tmp_path / "e.engine", make_key(), ENGINE)
    with pytest.raises(CacheMiss, match=f"stale engine.*{field}"):
        read_engine(path, make_key(**{field: value}))


def test_engine_from_before_build_mode_is_rebuilt(tmp_path):
    """Files written before the key recorded the build mode came from weakly typed builds
    (fp16 by builder flag); a strongly typed key never accepts them."""
    key = make_key(build_mode="strongly-typed")
    old = {k: v for k, v in make_key().to_dict().items() if k != "build_mode"}
    header = json.dumps({"key": old, "key_digest": "0" * 64, "engine_sha256": "0" * 64,
                         "engine_size": len(ENGINE), "created": 0.0}).encode()
    path = tmp_path / "old.engine"
    path.write_bytes(struct.pack("<8sII", b"LGSEGTRT", 1, len(header)) + header + ENGINE)
    with pytest.raises(CacheMiss, match="build_mode"):
        read_engine(path, key)


def test_truncated_engine_is_refused(tmp_path):
    key = make_key()
    path = write_engine(tmp_path / "e.engine", key, ENGINE)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CacheMiss, match="truncated"):
        read_engine(path, key)
    for cut in (3, 16 + 5):  # inside the prefix, inside the header
        path.write_bytes(data[:cut])
        with pytest.raises(CacheMiss, match="truncated"):
            read_engine(path, key)


def test_corrupt_engine_bytes_fail_their_checksum(tmp_path):
    key = make_key()
    path = write_engine(tmp_path / "e.engine", key, ENGINE)
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0xFF  # one flipped byte inside the engine, same length
    path.write_bytes(bytes(data))
    with pytest.raises(CacheMiss, match="sha256"):
        read_engine(path, key)


def test_foreign_and_garbled_files_are_refused(tmp_path):
    key = make_key()
    path = tmp_path / "e.engine"
    path.write_bytes(ENGINE)  # a raw engine from trtexec, no header
    with pytest.raises(CacheMiss, match="magic"):
        read_engine(path, key)
    path.write_bytes(struct.pack("<8sII", b"LGSEGTRT", 1, 7) + b"{notjs}" + ENGINE)
    with pytest.raises(CacheMiss, match="corrupt header"):
        read_engine(path, key)
    path.write_bytes(struct.pack("<8sII", b"LGSEGTRT", 99, 2) + b"{}")
    with pytest.raises(CacheMiss, match="format 99"):
        read_engine(path, key)
    with pytest.raises(CacheMiss, match="no cached engine"):
        read_engine(tmp_path / "missing.engine", key)


def test_headers_that_are_no_object_and_oversized_engines_are_cache_misses(tmp_path):
    """Audit round 17: a header of `5` (TypeError) or of 60,000 nested brackets
    (RecursionError) escaped CacheMiss, so the engine was neither served nor rebuilt and
    configure failed; and an engine file was read whole before its length was compared
    with the header, so a 4 GiB sparse file cost 4 GiB of memory before it was refused."""
    from lgseg_ros.runtime.engine_cache import MAX_ENGINE_BYTES

    key = make_key()
    path = tmp_path / "e.engine"
    for header in (b"5", b"[" * 60_000 + b"]" * 60_000):
        path.write_bytes(struct.pack("<8sII", b"LGSEGTRT", 1, len(header)) + header)
        with pytest.raises(CacheMiss, match="corrupt header"):
            read_engine(path, key)
    write_engine(path, key, ENGINE)
    with open(path, "r+b") as f:    # sparse: no disk space taken
        f.truncate(MAX_ENGINE_BYTES + 4096)
    with pytest.raises(CacheMiss, match="header says"):
        read_engine(path, key)


def test_edited_header_key_is_caught_by_digest(tmp_path):
    key = make_key()
    other = make_key(precision="fp32")
    path = write_engine(tmp_path / "e.engine", other, ENGINE)
    raw = path.read_bytes()
    _, _, n = struct.unpack("<8sII", raw[:16])
    header = json.loads(raw[16:16 + n])
    header["key"] = key.to_dict()  # claims the wanted key but keeps the old digest
    new = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(struct.pack("<8sII", b"LGSEGTRT", 1, len(new)) + new + raw[16 + n:])
    with pytest.raises(CacheMiss, match="digest"):
        read_engine(path, key)


def test_key_survives_json_and_names_differ_per_shape():
    key = make_key()
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    assert key.filename() != make_key(input_shape=(1, 3, 480, 640)).filename()
    assert "384x480" in key.filename() and key.filename().endswith(".engine")


def test_get_or_build_builds_once_then_serves_and_rebuilds_when_damaged(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    key = make_key()
    calls = []

    def build():
        calls.append(1)
        return ENGINE

    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.engine_cache"):
        engine, built = cache.get_or_build(key, build)
    assert (engine, built, len(calls)) == (ENGINE, True, 1)
    assert any("may take several minutes" in r.getMessage() for r in caplog.records)

    engine, built = cache.get_or_build(key, build)
    assert (engine, built, len(calls)) == (ENGINE, False, 1)

    path = cache.path_for(key)
    path.write_bytes(path.read_bytes()[:-1])  # damage it: next call must rebuild, not serve
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.engine_cache"):
        engine, built = cache.get_or_build(key, build)
    assert (engine, built, len(calls)) == (ENGINE, True, 2)
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert read_engine(path, key) == ENGINE

    engine, built = cache.get_or_build(key, build, force_rebuild=True)
    assert (built, len(calls)) == (True, 3)
    # no temp files left; the cache's origin secret is the only other file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, ORIGIN_SECRET])


def test_failed_build_leaves_no_file(tmp_path):
    cache = EngineCache(tmp_path)

    def build():
        raise RuntimeError("parser error")

    with pytest.raises(RuntimeError, match="parser error"):
        cache.get_or_build(make_key(), build)
    assert [p.name for p in tmp_path.iterdir() if p.name != ORIGIN_SECRET] == []


def test_cache_keeps_the_most_recently_used_engines(tmp_path, monkeypatch):
    """A robot that rebuilds for every model update must not fill its disk: past
    LGSEG_CACHE_KEEP files the least recently used go, and a cache hit counts as a use."""
    # the order of use is under test: no file here was used "just now" by another process
    monkeypatch.setattr("lgseg_ros.runtime.engine_cache.PRUNE_GRACE_S", 0.0)
    monkeypatch.setenv("LGSEG_CACHE_KEEP", "2")
    cache = EngineCache(tmp_path)
    keys = [make_key(input_shape=(1, 3, 32 * (i + 1), 480)) for i in range(3)]
    builds = []

    def build(i):
        builds.append(i)
        return ENGINE

    cache.get_or_build(keys[0], lambda: build(0))
    cache.get_or_build(keys[1], lambda: build(1))
    cache.get_or_build(keys[0], lambda: build(0))        # hit: key 0 is now the newest use
    cache.get_or_build(keys[2], lambda: build(2))        # third file: key 1 goes
    assert builds == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("*.engine")) == sorted(
        cache.path_for(k).name for k in (keys[0], keys[2]))
    assert cache.get_or_build(keys[0], lambda: build(0)) == (ENGINE, False)
    cache.get_or_build(keys[1], lambda: build(1))        # rebuilt, as it was pruned
    assert builds == [0, 1, 2, 1]
    assert len(list(tmp_path.glob("*.engine"))) == 2


def test_prune_leaves_other_files_and_the_protected_one(tmp_path):
    import os

    from lgseg_ros.runtime.engine_cache import prune_cache
    files = []
    for i in range(4):
        f = tmp_path / f"lgseg_{i}.engine"
        f.write_bytes(b"x")
        os.utime(f, ns=(1_000_000_000 * (i + 1), 1_000_000_000))
        files.append(f)
    (tmp_path / "notes.txt").write_text("mine")
    removed = prune_cache(tmp_path, "lgseg_*.engine", keep=1, protect=files[0])
    assert sorted(removed) == sorted(files[1:3])          # the oldest is protected
    assert {p.name for p in tmp_path.iterdir()} == {"lgseg_0.engine", "lgseg_3.engine", "notes.txt"}


def test_a_file_used_in_the_last_minute_is_not_pruned(tmp_path):
    """Probe round 12, two nodes sharing a cache: node A finds its file (least recently used
    there) and verifies and loads it; node B, building a new size meanwhile, pruned it, and
    A's configure failed on a file that had vanished (FileNotFoundError out of the hash or
    the read). A file used in the last PRUNE_GRACE_S is kept whatever its rank; A marks its
    file used before it reads it (artefacts.ModelSource._find), and a file that vanishes
    anyway is a reason, not an exception."""
    import os
    import time

    from lgseg_ros.runtime.engine_cache import PRUNE_GRACE_S, prune_cache
    now = time.time_ns()
    ages = {"old": 3 * 3600, "older": 4 * 3600, "just_used_by_a": 5, "b_newest": 1}
    files = {}
    for name, age in ages.items():
        f = tmp_path / f"lgseg_{name}.onnx"
        f.write_bytes(b"x")
        os.utime(f, ns=(now - int(age * 1e9), now - int(7200 * 1e9)))
        files[name] = f
    assert ages["just_used_by_a"] < PRUNE_GRACE_S
    removed = prune_cache(tmp_path, "lgseg_*.onnx", keep=1, protect=files["b_newest"])
    assert sorted(removed) == sorted([files["old"], files["older"]])
    assert files["just_used_by_a"].exists()


def test_a_frame_file_that_vanishes_while_verified_is_a_reason(tmp_path, monkeypatch):
    """The other half: a file pruned between the lookup's checks and its hash (a real
    FileNotFoundError from the real file system, by a second process's unlink) made
    ModelSource.onnx raise it instead of building the file again."""
    import threading

    from test_node_support import make_checkpoint

    from lgseg_ros.runtime import artefacts
    from lgseg_ros.runtime.artefacts import model_source

    monkeypatch.setenv("LGSEG_ARTEFACTS", str(tmp_path / "art"))
    monkeypatch.setenv("LGSEG_CACHE_DIR", str(tmp_path / "user_cache"))
    ckpt = make_checkpoint(tmp_path / "tiny.safetensors")
    first = model_source(ckpt)[0].onnx((32, 32), "fp32")
    real_read = artefacts.read_manifest
    pruned = []

    def read_then_pruned(path):      # the manifest read, then the other process's unlink
        manifest = real_read(path)
        if path == first and not pruned:
            pruned.append(threading.Thread(target=first.unlink))
            pruned[0].start()
            pruned[0].join()
        return manifest

    monkeypatch.setattr(artefacts, "read_manifest", read_then_pruned)
    again = model_source(ckpt)[0].onnx((32, 32), "fp32")   # raised FileNotFoundError
    assert pruned and again == first and again.exists()


# -- origin: a checksum is not proof of origin (issue 20, item 5) ---------------------------

def _built(cache, key, engine=ENGINE):
    calls = []

    def build():
        calls.append(1)
        return engine
    out, built = cache.get_or_build(key, build)
    return out, built, len(calls)


def test_a_planted_engine_with_a_valid_checksum_is_rebuilt_not_served(tmp_path, caplog):
    """Someone who can write a file can also write a matching key and sha256 into its header:
    only the origin signature, made with this cache's secret, says the cache wrote it."""
    cache = EngineCache(tmp_path)
    key = make_key()
    planted = b"EVIL" * 1000
    write_engine(cache.path_for(key), key, planted)             # checksum right, no signature
    assert read_engine(cache.path_for(key), key) == planted      # integrity alone would pass
    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.engine_cache"):
        engine, built, calls = _built(cache, key)
    assert (engine, built, calls) == (ENGINE, True, 1)
    assert any("not written by this cache" in r.getMessage() for r in caplog.records)
    # Signed with another cache's secret (an engine copied from another machine): rebuilt too.
    write_engine(cache.path_for(key), key, planted, secret=b"x" * 32)
    assert _built(cache, key) == (ENGINE, True, 1)
    assert _built(cache, key) == (ENGINE, False, 0)              # its own file is served


def test_a_tampered_engine_a_wrong_source_or_version_is_refused_and_rebuilt(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    key = make_key()
    _built(cache, key)
    path = cache.path_for(key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01                                             # one bit of the engine
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.engine_cache"):
        assert _built(cache, key) == (ENGINE, True, 1)
    assert any("sha256" in r.getMessage() for r in caplog.records)
    # A signed file for another source ONNX or TensorRT version, renamed to this key's name.
    for change in ({"onnx_sha256": "cd" * 32}, {"trt_version": "10.3.0.26"}, {"gpu_name": "Orin"},
                   {"compute_capability": (8, 7)}, {"k_profile": (1, 16, 64)}):
        other = make_key(**change)
        _built(cache, other, engine=b"OTHER" * 100)
        cache.path_for(other).replace(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.engine_cache"):
            assert _built(cache, key) == (ENGINE, True, 1), change
        field = next(iter(change))
        assert any("stale engine" in r.getMessage() and field in r.getMessage()
                   for r in caplog.records), change


def test_only_own_regular_files_in_a_private_directory_are_served(tmp_path):
    import os

    cache = EngineCache(tmp_path)
    key = make_key()
    _built(cache, key)
    path = cache.path_for(key)
    path.chmod(0o666)
    with pytest.raises(CacheMiss, match="writable by group or others"):
        read_engine(path, key, cache.secret)
    assert _built(cache, key) == (ENGINE, True, 1)              # rebuilt, with a safe mode
    elsewhere = tmp_path / "elsewhere.engine"
    path.replace(elsewhere)
    os.symlink(elsewhere, path)                                  # a link to a signed file
    with pytest.raises(CacheMiss, match="not a regular file"):
        read_engine(path, key, cache.secret)
    assert _built(cache, key) == (ENGINE, True, 1)
    assert not path.is_symlink()
    # The directory itself must be this user's and closed to others.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ValueError, match="writable by group or others"):
        EngineCache(shared)
    with pytest.raises(ValueError, match="no such directory"):
        EngineCache(tmp_path / "missing")
    secret = tmp_path / ORIGIN_SECRET
    assert oct(secret.stat().st_mode & 0o777) == oct(0o600)
    secret.chmod(0o644)
    with pytest.raises(ValueError, match="origin secret"):
        EngineCache(tmp_path).secret


def test_the_default_directory_is_made_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LGSEG_CACHE_DIR", str(tmp_path / "c"))
    cache = EngineCache()
    assert cache.directory == tmp_path / "c" / "engines"
    assert oct(cache.directory.stat().st_mode & 0o777) == oct(0o700)


def test_a_source_changed_during_the_build_is_not_cached(tmp_path):
    """The key holds the sha256 of the verified ONNX file; the builder reads the file again
    later. If it changed meanwhile, the engine would be cached under the verified key."""
    from lgseg_ros.runtime.engine_cache import sha256_file

    onnx = tmp_path / "frame.onnx"
    onnx.write_bytes(b"verified graph")
    cache = EngineCache(tmp_path)
    key = make_key(onnx_sha256=sha256_file(onnx))

    def build():
        onnx.write_bytes(b"swapped graph")
        return ENGINE
    with pytest.raises(RuntimeError, match="changed while the engine was built"):
        cache.get_or_build(key, build, source=onnx)
    assert not cache.path_for(key).exists()
    onnx.write_bytes(b"verified graph")
    assert cache.get_or_build(key, lambda: ENGINE, source=onnx) == (ENGINE, True)


def test_a_secret_being_made_is_never_read_half_written(tmp_path, monkeypatch):
    """Two nodes starting on an empty cache at once: the second read the first's secret
    file between its creation and its write (0 bytes) and refused the cache as damaged,
    telling the user to delete it. The secret now appears whole or not at all."""
    import os

    from lgseg_ros.runtime.engine_cache import load_origin_secret

    real, seen = os.urandom, []

    def urandom(n):  # the other process loads the secret while this one is making it
        monkeypatch.setattr(os, "urandom", real)
        seen.append(load_origin_secret(tmp_path))
        return real(n)

    monkeypatch.setattr(os, "urandom", urandom)
    secret = load_origin_secret(tmp_path)
    assert seen == [secret] and len(secret) == 32            # both use the one on disk
    assert [p.name for p in tmp_path.iterdir()] == [ORIGIN_SECRET]
    assert oct((tmp_path / ORIGIN_SECRET).stat().st_mode & 0o777) == oct(0o600)


def test_an_unsafe_cache_is_refused_before_building_is_announced_or_run(tmp_path, caplog):
    """An unsafe origin secret was found only when the engine was written: with
    force_rebuild the cache logged "building TensorRT engine ... several minutes" and ran the
    build, then refused. A folder opened to others after the cache was made was written
    into. Both now refuse first: no build, no "building" line."""
    cache = EngineCache(tmp_path)
    key = make_key()
    calls = []

    def build():
        calls.append(1)
        return ENGINE

    (tmp_path / ORIGIN_SECRET).write_bytes(b"x" * 32)
    (tmp_path / ORIGIN_SECRET).chmod(0o644)
    with caplog.at_level(logging.INFO, logger="lgseg_ros.runtime.engine_cache"):
        with pytest.raises(ValueError, match=f"{tmp_path / ORIGIN_SECRET}: the engine cache's origin secret"):
            cache.get_or_build(key, build, force_rebuild=True)
    (tmp_path / ORIGIN_SECRET).unlink()
    cache = EngineCache(tmp_path)
    tmp_path.chmod(0o777)
    try:
        with caplog.at_level(logging.INFO, logger="lgseg_ros.runtime.engine_cache"):
            with pytest.raises(ValueError, match=f"TensorRT engine cache directory={tmp_path} is "
                                                 "writable by group or others"):
                cache.get_or_build(key, build)
    finally:
        tmp_path.chmod(0o700)
    assert calls == [] and not cache.path_for(key).exists()
    assert not any("building" in r.getMessage() for r in caplog.records)
    assert cache.get_or_build(key, build) == (ENGINE, True) and calls == [1]


def test_a_cache_opened_to_others_during_the_build_is_not_written(tmp_path, caplog):
    """The folder was judged before the build and not again before the write, minutes
    later: one opened to others (chmod 777) while TensorRT built was written into. The
    build here opens it, as another process would meanwhile; the engine is not written."""
    cache = EngineCache(tmp_path)
    key = make_key()

    def build():
        tmp_path.chmod(0o777)
        return ENGINE

    try:
        with pytest.raises(ValueError, match=f"TensorRT engine cache directory={tmp_path} is "
                                             "writable by group or others"):
            cache.get_or_build(key, build)
    finally:
        tmp_path.chmod(0o700)
    assert not cache.path_for(key).exists()
    assert not list(tmp_path.glob("lgseg_*.engine*"))
