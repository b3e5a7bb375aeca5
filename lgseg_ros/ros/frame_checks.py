"""Checks on a frame's header, before any work is spent on the frame (no rclpy node needed).

Every output copies the input header, and a new label set is announced on the latched
label_info / label_set topics with the header of its first frame. A header is therefore
multiplied by the number of outputs and kept for every late subscriber: a 16 MB frame_id on
five 2x2 frames made the node publish 5 GB (64x its input) and hold 1.5 GB more (issue 20,
item 3). frame_ids are TF frame names, a few dozen characters; longer ones are refused.

Stamps: outputs and label_info are matched to frames by stamp, so a zero stamp, or one
that goes backwards, makes masks of two label sets indistinguishable to a consumer (item
13). Such frames are still served (a replayed bag may jump back), but the node says so in
the log, throttled, once per camera and kind.
"""
from __future__ import annotations

from lgseg_ros.labels import shown
from lgseg_ros.ros.image_conversion import ImageConversionError

# REP 105 frame names are short; TF itself has no limit, but no real frame is near this.
MAX_FRAME_ID_CHARS = 256
NANOSEC_PER_SEC = 1_000_000_000


class FrameRejected(ImageConversionError):
    """A frame refused for its header; counted and logged like a conversion refusal."""


def check_nanosec(nanosec: int) -> None:
    """builtin_interfaces/Time holds nanosec < 1e9, but the field takes any uint32:
    (100 s, 4,294,967,295 ns) is 104.29 s, and the next label_info, stamped (101 s, 0 ns),
    looked later than that mask by field order while 3.3 s earlier by the clock (probe
    round 17). Refused, as a frame_id too long is."""
    if nanosec >= NANOSEC_PER_SEC:
        raise FrameRejected(f"header.stamp.nanosec={nanosec} is not below {NANOSEC_PER_SEC:,} "
                            "(builtin_interfaces/Time); outputs copy the header and label "
                            "changes are ordered by stamp, so it is refused")


def check_frame(msg) -> None:
    """Raise FrameRejected naming the field and its (shortened) value."""
    frame_id = msg.header.frame_id
    if len(frame_id) > MAX_FRAME_ID_CHARS:
        raise FrameRejected(f"header.frame_id={shown(frame_id)} is longer than {MAX_FRAME_ID_CHARS} "
                            "characters; outputs copy the header, so it is refused")


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class StampWatch:
    """The last stamp seen on one camera; says when a new one is zero or goes backwards."""

    def __init__(self) -> None:
        self.last_ns: int | None = None

    def check(self, header) -> str | None:
        """A warning for this frame's stamp, or None when it is later than the last one."""
        ns = stamp_ns(header)
        last, self.last_ns = self.last_ns, ns
        if ns == 0:
            return ("header.stamp is 0: outputs copy it, so consumers that match masks and "
                    "label_info by stamp cannot tell frames or label sets apart")
        if last is not None and ns <= last:
            return (f"header.stamp went back or repeated ({ns} ns after {last} ns): masks "
                    "stamped before a label change may look as if made under the new set")
        return None


# The last instant a builtin_interfaces/Time holds (int32 seconds).
TIME_MAX_SEC = 2**31 - 1


def clock_stamp(clock):
    """``clock``'s now as a builtin_interfaces/Time, held to the last instant a Time holds.
    With use_sim_time the node's clock is a peer's /clock: seconds 2**31 - 1 with nanosec
    4,294,967,295 (the field takes any uint32) put it 4 s past that instant, and rclpy's
    to_msg() then gave seconds that went out as -2**31 + 3, so the label_info of a change
    and ~/status were stamped before every mask (probe round 11)."""
    stamp = clock.now().to_msg()
    if stamp.sec > TIME_MAX_SEC:
        stamp = type(stamp)(sec=TIME_MAX_SEC, nanosec=999_999_999)
    return stamp

