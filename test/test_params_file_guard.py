"""Parameter YAML (`--params-file`, `-p`) is bounded before rcl parses it (audit round 18):
rcl's parser is quadratic in keys and nesting and holds signals off meanwhile (13.6 s for
100,000 keys). The counts are libyaml's, so the forms a hand-written scan missed (the review
of round 18: JSON-style flow maps, quotes inside plain values, CR line ends, UTF-16) count."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lgseg_ros.resources import package_path
from lgseg_ros.ros.params_file_guard import (MAX_PARAMETER_PATH, MAX_PARAMS_BYTES,
                                             MAX_PARAMS_DEPTH, MAX_PARAMS_KEYS, MAX_SEQUENCE_ITEMS,
                                             PinnedParameterArgs, check_parameter_sources,
                                             params_file_problem, parameter_sources)
from test_node_support import node_env

HEAD = "lgseg_node:\n  ros__parameters:\n"
N = MAX_PARAMS_KEYS + 10


def test_the_shipped_parameter_files_pass():
    paths = sorted(package_path("config").glob("*.yaml"))
    assert paths
    for path in paths:
        assert params_file_problem(str(path)) is None, path


def test_every_params_file_and_p_value_on_the_command_line_is_read():
    args = ["lgseg_node", "--params-file", "own.yaml", "--ros-args", "-p", "x:=[1, 2]",
            "--params-file", "a.yaml", "--enclave", "--", "--params-file", "b.yaml"]
    assert parameter_sources(args) == [("file", "own.yaml"), ("value", "[1, 2]"),
                                       ("file", "a.yaml"), ("file", "b.yaml")]


@pytest.mark.parametrize("text,problem", [
    (HEAD + "".join(f"    p{i}: {i}\n" for i in range(N)), "keys to more than"),
    # JSON-style flow map: no space after ':'
    (HEAD.replace("ros__parameters:\n", "ros__parameters: {") +
     ",".join(f'"p{i}":{i}' for i in range(N)) + "}\n", "keys to more than"),
    # a quote inside a plain value does not open a quoted string
    (HEAD + "    a: x,'y\n" + "".join(f"    p{i}: {i}\n" for i in range(N)), "keys to more than"),
    # CR line ends
    ("# c\r" + (HEAD + "".join(f"    p{i}: {i}\n" for i in range(N))).replace("\n", "\r"), "keys to more than"),
    (HEAD + "    x: " + "{a: " * 100 + "1" + "}" * 100 + "\n", f"nests more than {MAX_PARAMS_DEPTH} levels"),
    (HEAD + "    labels: [" + ", ".join(["y" * 100] * 12_000) + "]\n", f"more than the {MAX_PARAMS_BYTES} allowed"),
    # rcl compares each new name with every earlier one: one long key above many short ones
    (HEAD + "    ? " + "a" * 5000 + "\n    :\n" + "".join(f"      k{i}: 1\n" for i in range(10)),
     f"parameter name of more than {MAX_PARAMETER_PATH} characters"),
    # and grows an array one item at a time
    (HEAD + "    x: [" + ",".join(["1"] * (MAX_SEQUENCE_ITEMS + 1)) + "]\n",
     f"list of more than {MAX_SEQUENCE_ITEMS} items"),
])
def test_files_over_a_bound_are_refused_naming_it(tmp_path, text, problem):
    path = tmp_path / "p.yaml"
    path.write_bytes(text.encode())
    assert re.search(problem, params_file_problem(str(path)) or ""), params_file_problem(str(path))
    path.write_bytes(text.encode("utf-16"))      # libyaml reads UTF-16 from its BOM
    assert params_file_problem(str(path)) is not None


def test_the_bounds_are_on_all_sources_together_and_real_files_fit(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}.yaml")
        files[-1].write_text(HEAD + "".join(f"    p{j}: {j}\n" for j in range(MAX_PARAMS_KEYS // 3 - 2)))
    args = ["x", "--ros-args", *[a for f in files for a in ("--params-file", str(f))]]
    assert check_parameter_sources(args) is None
    assert "keys to more than" in check_parameter_sources(args + ["-p", "a:=1"] * 20)
    # Within the bounds: the longest list a real file could have, and some nesting.
    path = tmp_path / "ok.yaml"
    path.write_text(HEAD + "    labels: [" + ", ".join(f"w{i}" for i in range(MAX_SEQUENCE_ITEMS)) + "]\n"
                    + "    x: " + "[" * 32 + "1" + "]" * 32 + "\n"
                    + "    " + "n" * 200 + ": {a: 1}\n")
    assert params_file_problem(str(path)) is None
    # an argument that is not UTF-8 is left to rcl's own error, not a traceback here
    assert check_parameter_sources(["x", "--ros-args", "-p",
                                    b"a:=\xff".decode("utf-8", "surrogateescape")]) is None


def test_a_fifo_is_refused_without_being_read(tmp_path):
    import os

    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    assert "is not a regular file" in params_file_problem(str(fifo))
    assert params_file_problem(str(tmp_path / "missing.yaml")) is None   # left to rcl's message


def test_the_node_refuses_an_oversized_params_file_in_one_line(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(HEAD + "".join(f"    p{i}: {i}\n" for i in range(MAX_PARAMS_KEYS + 100)))
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                          "-r", "__ns:=/params_guard", "--params-file", str(path)],
                         capture_output=True, text=True, timeout=120, env=node_env())
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    assert f"cannot start: --params-file '{path}' brings the parameter keys to more than the {MAX_PARAMS_KEYS}" in text


def test_the_relay_has_the_nodes_params_file_guard(tmp_path):
    """`lgseg bench-node`'s relay called rclpy.init with its command line as given: the
    oversized file the node refuses in one line held the relay in rcl's parse, then it ran
    on with it. It goes through the node's guard now: refused in one line, exit 2; and a
    file it cannot open is refused naming it, as the node does."""
    path = tmp_path / "many.yaml"
    path.write_text(HEAD.replace("lgseg_node", "lgseg_relay")
                    + "".join(f"    p{i}: {i}\n" for i in range(MAX_PARAMS_KEYS + 100)))
    missing = tmp_path / "missing.yaml"
    for given, said in ((path, f"brings the parameter keys to more than the {MAX_PARAMS_KEYS}"),
                        (missing, "No such file or directory")):
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.ros.relay", "--ros-args",
                              "-r", "__ns:=/relay_guard", "--params-file", str(given)],
                             capture_output=True, text=True, timeout=60, env=node_env())
        text = out.stdout + out.stderr
        assert out.returncode == 2, text[-2000:]
        assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
        assert f"[lgseg_relay] cannot start: --params-file '{given}'" in text and said in text, text


def test_the_relay_refuses_a_params_file_rcl_cannot_parse_in_one_line(tmp_path):
    """As the node does (test_the_node_names_the_params_file_given_...): a file within the
    bounds that rcl cannot parse stops the relay with one line of its own naming the file
    and rcl's reason, exit 2, no traceback. rcl logs "Failed to parse global arguments"
    itself before it, under its own name."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("lgseg_relay:\n  ros__parameters: [1, 2]\n")
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.ros.relay", "--ros-args",
                          "-r", "__ns:=/relay_guard", "--params-file", str(bad)],
                         capture_output=True, text=True, timeout=60, env=node_env())
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "Traceback" not in text and "/proc/self/fd" not in text, text
    ours = [x for x in text.strip().splitlines() if "[rcl]" not in x]
    assert len(ours) == 1, text
    assert ours[0].startswith("[lgseg_relay] cannot start: ") and str(bad) in ours[0], text
    assert "Couldn't parse params file" in ours[0], text


def test_rcl_parses_the_bytes_checked_not_the_file_replaced_after(tmp_path):
    """The guard read the params file, then rcl read it again by name: a file replaced in
    between was parsed unchecked (here: another value, and more keys than allowed). rcl now
    reads the bytes checked, and a real rclpy.init and node get the checked file's value."""
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    pin_value: 1\n")
    pinned = PinnedParameterArgs(["lgseg_node", "--ros-args", "--params-file", str(path)])
    assert pinned.refused is None and str(path) not in pinned.args
    path.write_text("/**:\n  ros__parameters:\n    pin_value: 2\n"
                    + "".join(f"    p{i}: {i}\n" for i in range(N)))
    assert "keys to more than" in params_file_problem(str(path))
    context = rclpy.Context()
    node = None
    try:
        rclpy.init(args=pinned.args, context=context, signal_handler_options=SignalHandlerOptions.NO)
        pinned.close()        # parsed at init: nothing reads the file after
        node = Node("pin_check", context=context, automatically_declare_parameters_from_overrides=True)
        assert node.get_parameter("pin_value").value == 1
        assert not node.has_parameter("p0")
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_the_node_names_the_params_file_given_and_refuses_one_it_cannot_open(tmp_path):
    """rcl's own error about a file it was handed as the bytes checked names the file given,
    not /proc/self/fd/N; a file that cannot be opened is refused by the guard, since rcl
    opening it later could find another file there."""
    missing = tmp_path / "missing.yaml"
    assert PinnedParameterArgs(["x", "--params-file", str(missing)]).refused == \
        f"--params-file '{missing}': No such file or directory"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lgseg_node:\n  ros__parameters: [1, 2]\n")
    for path, said in ((bad, "Couldn't parse params file"), (missing, "No such file or directory")):
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                              "-r", "__ns:=/params_pin", "--params-file", str(path)],
                             capture_output=True, text=True, timeout=120, env=node_env())
        text = out.stdout + out.stderr
        assert out.returncode == 2, text[-2000:]
        assert "Traceback" not in text and "/proc/self/fd" not in text, text
        assert "cannot start" in text and str(path) in text and said in text, text


def test_named_puts_back_only_the_pinned_descriptor_not_a_longer_number(tmp_path):
    """named() replaced the pinned /proc/self/fd/N as plain text: with fd 12 pinned, an
    error naming /proc/self/fd/123 read `<the file>3`. Only the whole number is replaced."""
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    a: 1\n")
    pinned = PinnedParameterArgs(["x", "--params-file", str(path)])
    try:
        fd_path = pinned.args[2]
        assert fd_path.startswith("/proc/self/fd/"), pinned.args
        longer = f"{fd_path}7"
        assert pinned.named(f"bad {longer}; bad {fd_path}: x") == f"bad {longer}; bad {path}: x"
    finally:
        pinned.close()


def test_a_params_file_that_fails_to_read_is_refused_in_one_line():
    """An OSError from reading an opened file (EIO) escaped the guard as a traceback.
    /proc/self/mem is a regular file of size 0 whose read at offset 0 gives EIO: refused
    with the file and the reason, like a file that cannot be opened."""
    import os

    os.stat("/proc/self/mem")   # there to read, or the test means nothing
    pinned = PinnedParameterArgs(["x", "--params-file", "/proc/self/mem"])
    assert pinned.refused == "--params-file '/proc/self/mem': Input/output error"
    assert check_parameter_sources(["--params-file", "/proc/self/mem"]) is None   # left to rcl


def _unshare_works() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /proc"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_without_proc_the_params_file_keeps_its_path(tmp_path):
    """Where /proc/self/fd cannot be opened (no /proc mounted, hidepid), the sealed copy
    was handed to rcl as /proc/self/fd/N anyway: rcl could not open it and its error blamed
    the user's valid file. The copy is now used only if its name reads back the bytes;
    here, with an empty /proc mounted over the real one in a private mount namespace, the
    path given is kept and rcl parses it."""
    import os

    if not _unshare_works():
        pytest.skip("no unshare -m with mount here (needs CAP_SYS_ADMIN)")
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    pin_value: 7\n")
    script = (
        "import os, rclpy\n"
        "from rclpy.node import Node\n"
        "from rclpy.signals import SignalHandlerOptions\n"
        "from lgseg_ros.ros.params_file_guard import PinnedParameterArgs\n"
        "assert not os.path.exists('/proc/self/fd')\n"
        f"p = PinnedParameterArgs(['x', '--ros-args', '--params-file', {str(path)!r}])\n"
        "print('args', p.args, p.refused)\n"
        "c = rclpy.Context()\n"
        "rclpy.init(args=p.args, context=c, signal_handler_options=SignalHandlerOptions.NO)\n"
        "p.close()\n"
        "n = Node('noproc', context=c, automatically_declare_parameters_from_overrides=True)\n"
        "print('value', n.get_parameter('pin_value').value)\n"
        "n.destroy_node(); rclpy.try_shutdown(context=c)\n")
    env = dict(node_env(), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount -t tmpfs none /proc && exec "$0" -c "$1"', sys.executable, script],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"args ['x', '--ros-args', '--params-file', '{path}'] None" in done.stdout, done.stdout
    assert "value 7" in done.stdout, done.stdout
