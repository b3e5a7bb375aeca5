"""ONNX Runtime sessions built from verified bytes without keeping those bytes alive.

The node reads each ONNX artefact once, checks its sha256 and hands ONNX Runtime exactly
the bytes it checked (runtime/engine_cache.read_verified_bytes): opening the file again by
name could serve a file swapped in between. But ``onnxruntime.InferenceSession(bytes)``
keeps a reference to the bytes for the session's whole life (to rebuild the session if a
GPU provider fails), so the node carried a second copy of every model it runs: 66 MB for
the MiniLM text encoder, 8-17 MB for the frame path; issue 19 measured the text
encoder at +141 MB RSS where its session alone is +71 MB.

Handed over as a sealed anonymous file (memfd) instead, the checked bytes are parsed once
by ONNX Runtime and then freed with the file: nobody else can name, write or resize it,
so what is parsed is what was checked. Where that cannot be done (no memfd on this OS, or a
non-CPU provider, whose fallback re-reads the model after the file is gone) the bytes are
passed as before.
"""
from __future__ import annotations

import fcntl
import logging
import os

log = logging.getLogger(__name__)

_SEALS = ("F_SEAL_WRITE", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_SEAL")


def can_drop_bytes(providers) -> bool:
    """True where a session for ``providers`` can be built from a sealed memfd: Linux
    memfd with sealing, and only the CPU provider (a GPU provider's fallback to the CPU
    rebuilds the session from the model it was given, which must then still exist)."""
    return (hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")
            and all(hasattr(fcntl, s) for s in _SEALS)
            and list(providers or ["CPUExecutionProvider"]) == ["CPUExecutionProvider"])


def sealed_memfd(data: bytes, name: str = "lgseg-onnx") -> int:
    """An anonymous file holding ``data`` that nobody can write, grow or shrink (read it as
    /proc/self/fd/N); OSError where the OS has no sealed memfd."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        seals = 0
        for name in _SEALS:
            seals |= getattr(fcntl, name)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    except BaseException:
        os.close(fd)
        raise


def session_from_bytes(ort, data: bytes, sess_options=None, providers=None, **kwargs):
    """``ort.InferenceSession`` for the model ``data``; the session holds no reference to
    ``data`` where ``can_drop_bytes(providers)``, so the caller's ``del`` frees it."""
    providers = list(providers or ["CPUExecutionProvider"])
    if can_drop_bytes(providers):
        try:
            fd = sealed_memfd(data)
        except OSError as exc:   # memfd refused (seccomp, old kernel): keep the bytes
            log.debug("memfd unavailable (%s): the session keeps its model bytes", exc)
        else:
            try:
                return ort.InferenceSession(f"/proc/self/fd/{fd}", sess_options=sess_options,
                                            providers=providers, **kwargs)
            finally:
                os.close(fd)
    return ort.InferenceSession(data, sess_options=sess_options, providers=providers, **kwargs)
