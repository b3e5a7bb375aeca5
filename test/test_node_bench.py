"""`lgseg bench-node` runs end to end and reports every number it promises (no timing asserts)."""
import json
import subprocess
import sys


def test_bench_node_reports_latency_split_and_label_change():
    # --no-isolate: keep the test session's loopback-only discovery and domain (conftest.py).
    out = subprocess.run(
        [sys.executable, "-m", "lgseg_ros.cli", "bench-node", "--config", "test-tiny",
         "--backend", "torch", "--device", "cpu", "--net-height", "64", "--net-width", "96",
         "--height", "90", "--width", "120", "--frames", "8", "--warmup", "3", "--rate", "10",
         "--label-changes", "2", "--soak-seconds", "3", "--soak-change-period", "0.3",
         "--lifecycle-cycles", "2", "--lifecycle-labels", "4", "--no-isolate"],
        capture_output=True, text=True, timeout=240)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["ok"], result.get("error", out.stderr[-2000:])
    assert result["node"]["received"] > 0 and result["relay"]["received"] > 0
    for key in ("p50", "p95"):
        assert result["node"]["latency_ms"][key] > 0 and result["relay"]["latency_ms"][key] > 0
        assert result["label_change"]["first_mask_ms"][key] > 0
    assert {"decode", "preprocess", "model", "postprocess", "publish"} <= set(result["node"]["stages_ms_p50"])
    assert result["label_change"]["first_mask_ms"]["n"] == 2
    soak = result["soak"]
    assert soak["label_changes"] >= 3 and soak["missed_replies"] == 0 and soak["rejected"] == 0
    assert soak["replies"] == soak["label_changes"] and soak["masks_received"] > 0
    assert soak["node_rss_mb"]["start"] and soak["node_rss_mb"]["end"]
    # Issue 19's command: RSS over deactivate/cleanup/configure/activate rounds.
    cycles = result["lifecycle"]
    assert cycles["cycles"] == 2 and cycles["failed_label_changes"] == []
    assert len(cycles["rss_mb"]["after_each_cycle"]) == 2 and cycles["rss_mb"]["end"] > 0


def test_the_relay_offers_no_parameter_services_and_still_reads_its_parameters():
    """Audit round 18: the relay's parameter services took a peer's 200,000-name request
    for seconds of its executor; it reads its two parameters once, from the command line."""
    import rclpy
    from rclpy.parameter import Parameter

    from lgseg_ros.ros.relay import ImageRelay

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ImageRelay(context=context, parameter_overrides=[Parameter("qos_depth", value=3)])
        try:
            assert node._sub.qos_profile.depth == 3
            names = {n for n, _ in node.get_service_names_and_types_by_node(node.get_name(), "/")}
            assert not [n for n in names if "parameter" in n], names
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
