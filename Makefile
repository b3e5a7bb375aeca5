# The two README commands: `make demo` (the main job) and `make test`.
# Both run tools/setup_env.sh first: idempotent, seconds when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests and the demo stay on this machine: DDS discovery on loopback only, and a domain
# of their own so parallel runs do not see each other. The node itself forces neither.
LOCAL_ROS := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 100 + 1 ))}

.PHONY: setup test demo bench clean
setup:
	@LGSEG_VENV=$(abspath $(VENV)) bash tools/setup_env.sh

test: setup
	$(LOCAL_ROS) $(PY) -m pytest -q -rs test $(PYTEST_ARGS)

demo: setup
	$(LOCAL_ROS) $(PY) -m lgseg_ros.cli demo $(DEMO_ARGS)

bench: setup
	$(PY) -m lgseg_ros.cli bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build install log outputs

# Every GPU path in one command: GPU tests, fp16-vs-fp32 agreement and `lgseg bench` at
# 384x480 and 720x960 (batch throughput, ViT-L/R50 references) into outputs/gpu_check.json.
# Without CUDA it writes a JSON saying so and exits 0.
.PHONY: gpu-check
gpu-check: setup
	$(LOCAL_ROS) $(PY) -m lgseg_ros.runtime.gpu_check -o outputs/gpu_check.json $(GPU_CHECK_ARGS)
