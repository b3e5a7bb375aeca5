"""The first real round trip (issue 2): `lgseg node` started as its own process, over real DDS
on loopback, receives a sensor_msgs/Image and answers on the package's own SetLabels service.

conftest.py has already put this session on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
in a domain of its own; the child process inherits both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
from sensor_msgs.msg import Image

from lgseg_ros.msg import LabelInfo
from lgseg_ros.srv import SetLabels
from test_node_support import (LATCHED, NET_HW, RELIABLE, Recorder, RosHarness, camvid_frames,  # noqa: F401
                               mask_of, reference_segmenter, rgb_msg, stamp_key, tiny_checkpoint,
                               wait_until)

NS = "/roundtrip/lgseg_node"


def test_node_process_serves_an_image_and_answers_set_labels(tiny_checkpoint, reference_segmenter):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    cmd = [sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
           "-r", "__ns:=/roundtrip", "-r", "image:=/roundtrip/camera/image_raw",
           "-p", f"checkpoint:={tiny_checkpoint}", "-p", "backend:=torch", "-p", "device:=cpu",
           "-p", f"net_height:={NET_HW[0]}", "-p", f"net_width:={NET_HW[1]}",
           "-p", "labels:=[road, car, sky]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    h = RosHarness()
    try:
        rec = Recorder(h)
        rec.listen(f"{NS}/label_mask")
        rec.listen(f"{NS}/label_info", LabelInfo, LATCHED)
        pub = h.client.create_publisher(Image, "/roundtrip/camera/image_raw", RELIABLE)
        wait_until(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None,
                   timeout=90, what="the node process to subscribe")
        assert proc.poll() is None, "node exited:\n" + proc.stdout.read()
        rec.wait_matched(f"{NS}/label_mask", timeout=30)

        frame = camvid_frames(1)[0]
        msg = rgb_msg(frame, frame_id="camera_optical")
        pub.publish(msg)
        mask_msg = rec.wait_stamp(f"{NS}/label_mask", stamp_key(msg.header), timeout=30)
        assert mask_msg.header == msg.header and (mask_msg.height, mask_msg.width) == frame.shape[:2]
        expect = reference_segmenter.segment(frame, reference_segmenter.prepare_labels(["road", "car", "sky"]))
        np.testing.assert_array_equal(mask_of(mask_msg), expect.ids)

        client = h.client.create_client(SetLabels, f"{NS}/set_labels")
        reply = h.call(client, SetLabels.Request(labels=["Person", "bicycle"]), timeout=30)
        assert reply.success, reply.message
        assert [(c.class_id, c.class_name) for c in reply.class_map] == [(0, "person"), (1, "bicycle")]
        rejected = h.call(client, SetLabels.Request(labels=[]), timeout=30)
        assert not rejected.success and "empty" in rejected.message
        assert [c.class_name for c in rejected.class_map] == ["person", "bicycle"]
        info = rec.wait_for(lambda: [i for i in rec.get(f"{NS}/label_info")
                                     if [c.class_name for c in i.class_map] == ["person", "bicycle"]],
                            what="label_info of the new set")
        assert info
    finally:
        h.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    output = proc.stdout.read()
    assert proc.returncode == 0, output  # Ctrl-C is a clean exit
    assert "active" in output
