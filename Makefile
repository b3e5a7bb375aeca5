# The two README commands: `make demo` (the main job) and `make test`.
# Both run tools/setup_env.sh first: idempotent, seconds when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests and the demo stay on this machine: DDS discovery on loopback only, and a domain
# of their own so parallel runs do not see each other. The node itself forces neither.
LOCAL_ROS := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 100 + 1 ))}

.PHONY: setup test demo bench clean artefacts runtime runtime-demo
setup:
	@LGSEG_VENV=$(abspath $(VENV)) bash tools/setup_env.sh

# TESTS: the files to run (default: all of test/); PYTEST_ARGS: extra pytest options.
TESTS ?= test
test: setup
	$(LOCAL_ROS) $(PY) -m pytest -q -rs $(TESTS) $(PYTEST_ARGS)

# artefacts first: the node then starts from ONNX files (seconds) instead of exporting and
# calibrating them itself on its first start.
demo: setup artefacts
	$(LOCAL_ROS) $(PY) -m lgseg_ros.cli demo $(DEMO_ARGS)

bench: setup
	$(PY) -m lgseg_ros.cli bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) build install log outputs

# Issue 19: the ONNX files a torch-free node runs from (both shipped models, 384x480, fp32 +
# int8, MiniLM text encoder) into models/artefacts, built with the development venv (torch).
artefacts: setup
	$(PY) -m lgseg_ros.cli artefacts $(ARTEFACTS_ARGS)
	$(PY) -m lgseg_ros.cli artefacts --checkpoint models/lgseg_lite_minilm_rooms.safetensors $(ARTEFACTS_ARGS)

# The run-time install without torch (.venv-runtime, requirements-runtime.txt): `lgseg node`,
# the demo and the node tools from models/artefacts. Builds the artefacts first when this
# checkout has none (that step uses the development venv); on a robot, copy models/artefacts
# from a machine that built them and run `make runtime NO_ARTEFACT_BUILD=1`.
RUNTIME_VENV ?= .venv-runtime
RPY := $(RUNTIME_VENV)/bin/python
runtime:
	@if [ -z "$(NO_ARTEFACT_BUILD)" ] && ! ls models/artefacts/frame/*.onnx >/dev/null 2>&1; then \
	  $(MAKE) artefacts; fi
	@LGSEG_VENV=$(abspath $(RUNTIME_VENV)) LGSEG_REQUIREMENTS=requirements-runtime.txt bash tools/setup_env.sh
	@$(RPY) -c "import importlib.util as u, sys; sys.exit('torch is in the run-time venv' if u.find_spec('torch') else 0)"

runtime-demo: runtime
	$(LOCAL_ROS) $(RPY) -m lgseg_ros.cli demo $(DEMO_ARGS)

# Every GPU path in one command: GPU tests, fp16-vs-fp32 agreement and `lgseg bench` at
# 384x480 and 720x960 (batch throughput, ViT-L/R50 references) into outputs/gpu_check.json.
# Without CUDA it writes a JSON saying so and exits 0. On a borrowed GPU machine that reaches
# no package index: `make gpu-check NO_SETUP=1 PY=python3 GPU_CHECK_ARGS="--text-table FILE"`
# (that machine's own torch; the label embeddings made here, see README "GPU check").
.PHONY: gpu-check
gpu-check: $(if $(NO_SETUP),,setup)
	$(LOCAL_ROS) $(PY) -m lgseg_ros.runtime.gpu_check -o outputs/gpu_check.json $(GPU_CHECK_ARGS)
