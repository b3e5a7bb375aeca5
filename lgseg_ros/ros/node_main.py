"""The node's process: `lgseg node` / `ros2 run lgseg_ros lgseg_node`.

Start-up and ending, kept apart from the node itself: the Fast DDS profile before
rclpy.init, the library's logging into the ROS log, refusals of start-up values as one
line (exit 2), SIGINT / SIGTERM / SIGHUP handled by the node (a stop during start-up: one
line, exit 0; SIGUSR1, SIGUSR2 and SIGALRM ignored), a lifecycle shutdown ending the process
(exit 0), and one clear line when SROS2 is asked for but this Fast DDS cannot provide it.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

LABEL_THREAD = "lgseg-labels"   # ros/label_worker.py's thread name

# Only the standard library at module level: `lgseg node` and `ros2 run` install the stop
# handlers before importing rclpy, numpy, OpenCV and the node (about a second), so a stop in
# that second is one line and exit 0 too, not a KeyboardInterrupt traceback (exit -2) or
# death by SIGTERM (-15), as probe round 5 found 0.3 s after spawn.


class _RosLogHandler(logging.Handler):
    """Routes the library's Python logging (model load, engine builds) into the ROS log."""

    def __init__(self, logger) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        text = f"[{record.name}] {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


def usage() -> str:
    """`lgseg node --help`: how to start it, and every parameter with its range."""
    from lgseg_ros.ros import params as P

    lines = [
        "usage: lgseg node [--ros-args -p NAME:=VALUE ... -r image:=/camera/image_raw ...]",
        "       ros2 run lgseg_ros lgseg_node [--ros-args ...]",
        "",
        "The lgseg_ros lifecycle node: segments camera images into the classes named in the",
        "`labels` parameter or ~/set_labels service. Comes up active unless autostart:=false.",
        "Input: `image` (sensor_msgs/Image) or `image/compressed` (use_compressed:=true).",
        "Outputs under ~/ (label_mask, confidence, color_mask, overlay, class/<label>/mask,",
        "label_info, camera_info, status); services ~/set_labels, ~/enable.",
        "",
        "parameters (NAME: type, default [range] (applies: when)):",
    ]
    for p in P.PARAMETERS:
        default = "[]" if p.default is None else p.default
        rng = P.range_text(p)
        lines.append(f"  {p.name}: {p.kind}, default {default}{f' [{rng}]' if rng else ''} "
                     f"(applies: {p.applies})")
    lines += ["", "Large raw frames: see README, Troubleshooting (Fast DDS profile "
              "config/fastdds_large_frames.xml, used when FASTDDS_DEFAULT_PROFILES_FILE is unset)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`ros2 run lgseg_ros lgseg_node [--ros-args ...]` and `lgseg node [--ros-args ...]`."""
    # Our own SIGINT / SIGTERM / SIGHUP handlers instead of rclpy's, from the first instant:
    # a stop asked for while the node starts (imports, model load, export: seconds) ends
    # start-up at once, with a line and exit 0, not "did not reach active" and exit 1 after
    # the load, or a KeyboardInterrupt traceback (issue 20, item 10; probe round 5).
    previous = {sig: signal.signal(sig, _stop_requested) for sig in STOP_SIGNALS}
    previous.update({sig: signal.signal(sig, _ignored_signal) for sig in IGNORED_SIGNALS})
    sys.unraisablehook = _quiet_stop_hook(sys.unraisablehook)
    _fill_closed_std_fds()
    try:
        # Before anything large is allocated: freed models go back to the system
        # (procinfo). Inside the try: a stop may already arrive while it is imported.
        from lgseg_ros.procinfo import fix_mmap_threshold

        fix_mmap_threshold()
        rc = _run(argv)
    except StopRequested as e:   # before the ROS logger exists
        print(f"[lgseg_node] stopped by {e.args[0]} during start-up", file=sys.stderr)
        rc = 0
    except Exception:
        if not _STOPS:
            raise
        # The stop was raised inside an import that re-raises what it catches as its own
        # error: numpy's C extension turned it into "ImportError: initialization failed"
        # and the node exited 1 with a traceback (2 of 40 stops at 0.23-0.25 s).
        print(f"[lgseg_node] stopped by {_STOPS[0]} during start-up", file=sys.stderr)
        rc = 0
    finally:
        for sig, old in previous.items():
            # Not the stop signals: the process is ending (main is only ever its entry point),
            # and the interpreter's teardown takes about a second with torch loaded; a second
            # Ctrl-C there, or launch's SIGTERM after the terminal's SIGINT, killed the node by
            # that signal (exit -2 / -15) instead of 0 (probe round 16).
            signal.signal(sig, signal.SIG_IGN if sig in STOP_SIGNALS else old)
    if any(t.name == LABEL_THREAD and t.is_alive() for t in threading.enumerate()):
        # A label encoding still runs (the node waited 1 s for it): interpreter teardown
        # with that thread inside the text encoder aborts the process (exit -6), so end here,
        # with everything ROS already shut down and the output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _run(argv: list[str] | None) -> int:
    from lgseg_ros.ros import params as P

    args = sys.argv if argv is None else [P.NODE_NAME, *argv]
    own = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if any(a in ("-h", "--help") for a in own):
        print(usage())
        return 0
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                                  NameValidationException)
    from rclpy.logging import get_logger
    from rclpy.signals import SignalHandlerOptions

    from lgseg_ros.labels import shown
    from lgseg_ros.ros.dds import apply_dds_config
    from lgseg_ros.ros.executor import spin_until_shutdown
    from lgseg_ros.ros.node import ConfigError, LgsegNode
    from lgseg_ros.ros.params_file_guard import init_rclpy
    from lgseg_ros.runtime.artefacts import export_in_child

    # Before rclpy.init: the DDS reads its configuration when the first participant is
    # created. Fast DDS: our outputs (overlay, colour mask) are as large as the camera's
    # frames; Cyclone DDS: a cap on the size of any sample a peer sends.
    apply_dds_config()
    # An export on a cache miss (a net size never used here) in a child process: torch
    # and the eager network would otherwise stay in the node (+750 MB; probe round 11).
    export_in_child(True)
    _check_stop()
    # rcl's parse of parameter YAML is quadratic in its keys and nesting, and holds signals
    # off while it runs: 13.6 s for 100,000 keys (audit round 18). Bounded before rcl reads it,
    # and rcl reads the bytes checked, not the file's name again.
    refused = init_rclpy(args, signal_handler_options=SignalHandlerOptions.NO)
    if refused:
        print(f"[lgseg_node] cannot start: {refused}", file=sys.stderr)
        return 2
    node = None
    handler = None
    try:
        lib_log = logging.getLogger("lgseg_ros")
        handler = _RosLogHandler(get_logger(P.NODE_NAME))
        lib_log.addHandler(handler)
        lib_log.setLevel(logging.INFO)
        # The ROS log only: onnxruntime.quantization calls logging.basicConfig when imported
        # (an int8 quantisation at configure), after which every library line also went to
        # the root logger's stderr handler, each printed twice (probe round 10).
        lib_log.propagate = False
        try:
            node = LgsegNode()
        except (ConfigError, InvalidParameterValueException, InvalidParameterTypeException) as e:
            # A start-up value the node refuses: the reason, not a traceback.
            get_logger(P.NODE_NAME).fatal(f"bad parameter: {shown(str(e), 400)}")
            return 2
        except NameValidationException as e:
            # A namespace or node name long enough that a service name the node (or rclpy,
            # for its parameter services) makes from it passes ROS's 255 characters: rclpy
            # raised from inside Node.__init__, a 2.4 KB traceback and exit 1 (probe round 11).
            get_logger(P.NODE_NAME).fatal(name_refused_line(e))
            return 2
        except RCLError as e:
            line = security_unavailable_line(e)
            get_logger(P.NODE_NAME).fatal(line or f"cannot start: {shown(str(e).strip(), 400)}")
            return 2
        _check_stop()
        if node.get_parameter("autostart").value and node.lifecycle_state != "active":
            node.get_logger().fatal("autostart: the node did not reach active (see the error above)")
            return 1
        # One thread (rclpy's MultiThreadedExecutor delayed callbacks by up to seconds), and
        # one that survives entities destroyed mid-wait: see lgseg_ros/ros/executor.py.
        # The lifecycle's shutdown transition ends the process (exit 0), as a lifecycle
        # manager expects; a finalized node has nothing left to serve.
        spin_until_shutdown(node, done=lambda: node.lifecycle_state == "finalized" or bool(_STOPS))
        _check_stop()
        return 0
    except StopRequested as e:
        get_logger(P.NODE_NAME).info(f"stopped by {e.args[0]}" + ("" if node is not None else
                                                                    " during start-up"))
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        if handler is not None:
            logging.getLogger("lgseg_ros").removeHandler(handler)
            logging.getLogger("lgseg_ros").propagate = True
        rclpy.try_shutdown()


def _fill_closed_std_fds() -> None:
    """/dev/null onto stdin, stdout or stderr where the node was started with it closed
    (`lgseg node >&- 2>&-`): the next files opened took those numbers, and the console log
    went into the ROS log file and a Fast DDS socket (probe round 14)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:        # the lowest free number is fd itself when it is closed
                os.dup2(null, fd)
                os.close(null)


class StopRequested(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP; a KeyboardInterrupt, so spin_until_shutdown ends on it too."""


# Signals that stop the node like SIGINT: SIGHUP is what a closed terminal or ssh session
# sends, and by default it killed the node (exit -1) without leaving the graph cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Signals with no meaning to the node whose default action ends the process: ignored, with
# one line per signal the first time. Probe round 10 found SIGUSR1, SIGUSR2 and SIGALRM
# (exit -10, -12, -14); round 14 the rest of the class (SIGVTALRM -26, SIGPROF -27, SIGRTMIN
# -34). Left at their defaults: SIGKILL and SIGSTOP (cannot be caught), SIGQUIT and the
# fault signals (SEGV, BUS, FPE, ILL, ABRT, TRAP, SYS, XCPU: a core or a crash report is
# their point), the job-control stops, and those ignored by default (CHLD, URG, WINCH) or
# by Python (PIPE, XFSZ).
IGNORED_SIGNALS = tuple(dict.fromkeys(
    [getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
                                        "SIGIO", "SIGPOLL", "SIGPWR", "SIGSTKFLT")
     if hasattr(signal, name)]
    + (list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1)) if hasattr(signal, "SIGRTMIN") else [])))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:   # the real-time signals between SIGRTMIN and SIGRTMAX have no enum member
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


def _ignored_signal(signum, frame) -> None:
    # os.write, not print: the handler may run while the main thread is inside a print to
    # stderr, where a second one raises ("reentrant call"). SIG_IGN from then on: one line.
    # A closed stderr (a reader gone) must not turn the signal into an error of the spin.
    name = signal_name(signum)
    signal.signal(signum, signal.SIG_IGN)
    try:
        os.write(2, f"[lgseg_node] {name} ignored: it has no meaning to this node (SIGINT, "
                    f"SIGTERM or SIGHUP stop it); further {name} are ignored silently\n".encode())
    except OSError:
        pass


# The signals received, kept as well as raised: an exception raised by a signal handler
# lands wherever Python happens to be, and inside a callback whose exceptions are ignored
# (importlib's module-lock weakref callback, under load) it vanished, and the node started
# up and ran on after SIGTERM (a CI-like run). The flag is checked at each step of
# start-up and by the spin loop, so a stop is never lost.
_STOPS: list[str] = []


def _stop_requested(signum, frame) -> None:
    stopping = bool(_STOPS)
    _STOPS.append(signal.Signals(signum).name)
    if stopping:
        # Already stopping (the flag is checked at every step): raising again would land
        # inside the node's cleanup. A second Ctrl-C while destroy_node waited for a label
        # encoding ended the process with -6 (probe round 16's review).
        return
    raise StopRequested(_STOPS[-1])


def _quiet_stop_hook(default):
    """A stop raised inside a callback whose exceptions Python ignores is kept in _STOPS;
    its "Exception ignored in ..." traceback is noise, not an error."""
    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, StopRequested):
            default(unraisable)
    return hook


def _check_stop() -> None:
    if _STOPS:
        raise StopRequested(_STOPS[0])


def name_refused_line(error: Exception) -> str:
    """One line for a name rclpy refused while the node was made: its first line (what and
    why), the name cut short with its length, and what to change."""
    lines = str(error).splitlines()
    what = lines[0].rstrip(":") if lines else type(error).__name__
    name = lines[1].strip().strip("'") if len(lines) > 1 else ""
    from lgseg_ros.labels import shown

    return (f"cannot start: {shown(what, 120)}: {shown(name, 60)}; a service or topic name made "
            "from the namespace (-r __ns:=...) and node name (-r __node:=...) must fit ROS's "
            "limit: use a shorter namespace or node name")


def security_unavailable_line(error: Exception) -> str | None:
    """The one line for a node that cannot start because ROS_SECURITY_ENABLE asks for SROS2
    and this Fast DDS has no security plugins (the PyPI wheels have none); None otherwise."""
    if os.environ.get("ROS_SECURITY_ENABLE", "").lower() != "true" or "security" not in str(error).lower():
        return None
    return ("ROS_SECURITY_ENABLE=true, but this Fast DDS was built without the security plugins "
            "(the PyPI ROS 2 wheels have none), so the node cannot join a secured graph. Run it "
            "with an apt or source ROS 2 install (Fast DDS built with -DSECURITY=ON) and a "
            "keystore holding this node's enclave (README, Security), or unset "
            "ROS_SECURITY_ENABLE to run unsecured")
