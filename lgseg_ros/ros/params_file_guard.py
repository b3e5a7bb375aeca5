"""Bounds on the parameter YAML a node is started with (`--params-file`, `-p name:=value`),
checked before rcl reads it.

rcl's YAML parameter parser takes time that grows with the square of the number of keys
and of the nesting depth: a 1.8 MB file of 100,000 keys held `rclpy.init` for 13.6 s, 500 KB
of nested `{a: {a: ...}}` for more than 90 s, and a SIGINT meanwhile was honoured only when
the parse returned (audit round 18). rcl merges every file and `-p` value into one table, so
the bounds are on the total. A parameter file for this node has a few dozen keys.

The count is libyaml's own (PyYAML's C parser, the library rcl parses with): mapping keys and
collection depth from the parser's events, stopping at the first bound passed. A first
version scanned the text by hand and was blind to JSON-style flow maps, quotes inside plain
values, CR line ends and UTF-16 (the review of round 18).
"""
from __future__ import annotations

import os
import re
import stat
from typing import Sequence

from lgseg_ros.labels import shown

MAX_PARAMS_BYTES = 1 << 20          # all params files and -p values together
MAX_PARAMS_KEYS = 8192              # mapping keys, all of them together
MAX_PARAMS_DEPTH = 64               # nested mappings and sequences in one document
MAX_SEQUENCE_ITEMS = 4096           # items of one sequence: rcl grows an array item by item
MAX_PARAMETER_PATH = 256            # characters of a parameter's dotted name

_VALUE_FLAGS = ("-p", "--param")


class _Over(Exception):
    pass


def _sources(args: Sequence[str]) -> list[tuple[int, str, str]]:
    out = []
    for i, (flag, value) in enumerate(zip(args, args[1:]), start=1):
        if flag == "--params-file":
            out.append((i, "file", value))
        elif flag in _VALUE_FLAGS:
            out.append((i, "value", value.partition(":=")[2]))
    return out


def parameter_sources(args: Sequence[str]) -> list[tuple[str, str]]:
    """("file", path) for the argument after every `--params-file` and ("value", text) for
    every `-p` / `--param`, anywhere in the command line: rcl reads them inside any
    `--ros-args` section, and another flag's value (`--enclave --`) can end a section rcl
    still reads on from, so checking one too many is the safe side."""
    return [(kind, value) for _, kind, value in _sources(args)]


class _Budget:
    def __init__(self) -> None:
        self.bytes = self.keys = 0

    def add_key(self, where: str) -> None:
        self.keys += 1
        if self.keys > MAX_PARAMS_KEYS:
            raise _Over(f"{where} brings the parameter keys to more than the "
                        f"{MAX_PARAMS_KEYS} allowed")

    def count(self, data: bytes, where: str) -> None:
        """Adds the keys of one YAML stream; raises _Over naming the bound it passes.

        rcl's cost is quadratic in the keys of a node times the length of their dotted names
        (each new name is compared with every earlier one), and in the items of a sequence
        (its array grows one item at a time); the review of round 18 held `rclpy.init` 92 s
        with 4,000 keys under one 100,000-character key, and 7.5 s with one 100,000-item list."""
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        # per open collection: [is mapping, next is a key, items or the key's path length]
        stack: list[list] = []
        path = [0]                          # dotted-name length at each open mapping
        try:
            for ev in yaml.parse(data, Loader=loader):
                if isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent,
                                   yaml.SequenceStartEvent)):
                    if stack and stack[-1][0]:
                        if stack[-1][1]:
                            self.add_key(where)
                            name = len(ev.value) if isinstance(ev, yaml.ScalarEvent) else 0
                            stack[-1][2] = path[-1] + name + 1
                            if stack[-1][2] > MAX_PARAMETER_PATH:
                                raise _Over(f"{where} has a parameter name of more than "
                                            f"{MAX_PARAMETER_PATH} characters")
                        stack[-1][1] = not stack[-1][1]
                    elif stack:
                        stack[-1][2] += 1
                        if stack[-1][2] > MAX_SEQUENCE_ITEMS:
                            raise _Over(f"{where} has a list of more than "
                                        f"{MAX_SEQUENCE_ITEMS} items")
                    if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                        mapping = isinstance(ev, yaml.MappingStartEvent)
                        if mapping:
                            path.append(stack[-1][2] if stack and stack[-1][0] else path[-1])
                        stack.append([mapping, True, 0])
                        if len(stack) > MAX_PARAMS_DEPTH:
                            raise _Over(f"{where} nests more than {MAX_PARAMS_DEPTH} levels")
                elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    if stack.pop()[0]:
                        path.pop()
        except (yaml.YAMLError, UnicodeError):
            # Up to the error counted; rcl stops there too and names the error itself.
            return


def _read_file(path: str, budget: _Budget) -> bytes | OSError:
    """The file's bytes within the byte budget; the OSError where it cannot be opened or
    read (a missing or unreadable file; EIO, as /proc/self/mem gives: a traceback, not the
    one line). _Over for a file that is not regular or too large."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc
    try:
        return _read_open(fd, path, budget)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


def _read_open(fd: int, path: str, budget: _Budget) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would hold rcl's read (and this one) as long as its writer likes.
        raise _Over(f"--params-file {shown(path, 200)} is not a regular file")
    room = MAX_PARAMS_BYTES - budget.bytes
    if st.st_size > room:
        raise _Over(f"--params-file {shown(path, 200)} has {st.st_size} bytes, more than the "
                    f"{MAX_PARAMS_BYTES} allowed for all parameter files together")
    with os.fdopen(os.dup(fd), "rb") as f:
        data = f.read(room + 1)
    if len(data) > room:   # it grew since fstat
        raise _Over(f"--params-file {shown(path, 200)} has more than the {MAX_PARAMS_BYTES} bytes allowed")
    budget.bytes += len(data)
    return data


def _check(args: Sequence[str], unreadable_refused: bool) -> tuple[str | None, dict[int, bytes]]:
    """(refusal line or None, {index in args of a file's path: the bytes checked})."""
    budget = _Budget()
    files: dict[int, bytes] = {}
    try:
        for i, kind, value in _sources(args):
            if kind == "file":
                data = _read_file(value, budget)
                if isinstance(data, OSError):
                    if unreadable_refused:
                        return (f"--params-file {shown(value, 200)}: "
                                f"{data.strerror or 'cannot be read'}"), files
                    continue   # left to rcl's own message
                budget.count(data, f"--params-file {shown(value, 200)}")
                files[i] = data
            else:
                budget.bytes += len(value)
                if budget.bytes > MAX_PARAMS_BYTES:
                    raise _Over(f"-p values bring the parameter text to more than "
                                f"{MAX_PARAMS_BYTES} bytes")
                budget.add_key("a -p argument")
                # bytes, as rcl reads them: an argument that is not UTF-8 came in with
                # surrogates, which yaml.parse(str) raised on (the review of round 18)
                budget.count(value.encode("utf-8", "surrogateescape"), "a -p value")
    except _Over as over:
        return f"{over}: a parameter file for this node has a few dozen keys", files
    return None, files


def check_parameter_sources(args: Sequence[str]) -> str | None:
    """The refusal line for the first source that passes a bound, or None."""
    return _check(args, unreadable_refused=False)[0]


def params_file_problem(path: str) -> str | None:
    """check_parameter_sources for one file."""
    return check_parameter_sources(["--params-file", path])


def _readable_as(path: str, data: bytes) -> bool:
    """Whether opening ``path`` by name reads back ``data``, as rcl will open it."""
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


class PinnedParameterArgs:
    """The command line for rcl with every `--params-file` read once: checked, then handed to
    rcl as a sealed anonymous file of the bytes checked (/proc/self/fd/N). rcl opened the
    file again by name, so one replaced after the check (a 100,000-key file in place of the
    few dozen keys checked) was parsed unchecked, and could carry other values than those
    checked. ``refused``: the refusal line, or None; a file that cannot be opened is refused
    here too (rcl opening it later could find another file there). Where the OS has no
    sealed memfd the paths are kept, checked as before. close() once rcl has parsed them
    (rclpy.init): the parameters are kept parsed, the files are not read again."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.refused, files = _check(self.args, unreadable_refused=True)
        self._names: dict[str, str] = {}     # /proc/self/fd/N -> the path given
        self._fds: list[int] = []
        if self.refused:
            return
        from lgseg_ros.runtime.ort_session import sealed_memfd

        for i, data in files.items():
            try:
                fd = sealed_memfd(data, "lgseg-params")
            except (OSError, AttributeError):   # no memfd or no sealing here
                continue
            pinned = f"/proc/self/fd/{fd}"
            if not _readable_as(pinned, data):
                # No /proc (not mounted, hidepid): rcl could not open the name, and its error
                # blamed the user's valid file. The path is kept, checked as before.
                os.close(fd)
                continue
            self._fds.append(fd)
            self._names[pinned] = self.args[i]
            self.args[i] = pinned

    def named(self, text: str) -> str:
        """``text`` (rcl's error) with each pinned file's path put back."""
        if not self._names:
            return text
        # A boundary after the number: with fd 12 pinned, a plain replace turned
        # /proc/self/fd/123 into <path>3.
        return re.sub(r"/proc/self/fd/\d+", lambda m: self._names.get(m.group(0), m.group(0)), text)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def init_rclpy(args: Sequence[str], **init_kwargs) -> str | None:
    """rclpy.init(args=...) for a process's entry point (the node, the relay), its parameter
    sources bounded and pinned first (PinnedParameterArgs). None once rclpy is up; else the
    reason it cannot start, in one line for the caller to print (there is no ROS logger yet)
    and exit 2 on: an oversized or unopenable params file, an unwritable log directory, a
    params file rcl cannot parse."""
    pinned = PinnedParameterArgs(args)
    if pinned.refused:
        return pinned.refused
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError

    try:
        rclpy.init(args=pinned.args, **init_kwargs)
    except (RCLError, RuntimeError, ValueError) as e:
        return shown(pinned.named(str(e)).strip(), 400)
    finally:
        pinned.close()
    return None
