"""TensorRT API conformance on CPU, against the real Python bindings of three versions.

Versions: 10.3 (JetPack 6), the newest 10.x and the newest 11.x (what `pip install
tensorrt` gives). Their bindings wheels (`tensorrt-cu12-bindings`, `tensorrt-cu13-bindings`,
~1.2 MB each) are fetched by this test with `pip download` into `.whl/` (git-ignored, kept
between runs) and never committed; the tests skip with the reason only when that download
is impossible.

What is real here: each version's pybind module `tensorrt_bindings` (every class, enum,
method and property table and pybind signature), `trt.Logger`, the ONNX files (exported
from the test-tiny model, fp16 and fp32), the backend's own functions
(`lgseg_ros/runtime/backends/tensorrt_backend.py`), the engine cache, ONNX Runtime and
torch's CPU code.
What is stood in: NVIDIA's native libraries. The bindings link a few C entry points
(`createInferBuilder_INTERNAL`, `createNvOnnxParser_INTERNAL`, ...); this test compiles
stand-ins for them with the system C compiler that return nullptr, so the module imports
and `trt.Builder(logger)` fails exactly as it would on a broken driver. The objects only
those libraries can create (Builder, OnnxParser, Runtime, and the network / config /
engine / context they hand out) are recording stand-ins (test/trt_standins.py) that check
every attribute against the real class and every call against the real pybind overloads
(argument count and types), and raise where the real binding would.
Not covered (needs a GPU and NVIDIA's libraries): that the parser accepts our ONNX, that
the build succeeds, and the numbers the engine computes; `make gpu-check` does those.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".whl"
PROBE = Path(__file__).with_name("trt_probe.py")
# (label, pip requirement, native library major version)
VERSIONS = {
    "10.3": ("tensorrt-cu12-bindings==10.3.0", "10"),
    "10.x-newest": ("tensorrt-cu12-bindings==10.16.1.11", "10"),
    "11.x-newest": ("tensorrt-cu13-bindings==11.4.0.106", "11"),
}
STUB_C = r"""
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return NULL; }
void* getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
int getInferLibVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* ns) { return 0; }
"""


def _fetch(requirement: str) -> Path:
    """The unpacked bindings wheel for `requirement`, downloading it once into .whl/."""
    name, _, version = requirement.partition("==")
    target = CACHE / "site" / f"{name}-{version}"
    if (target / "tensorrt_bindings" / "tensorrt.so").exists():
        return target
    CACHE.mkdir(exist_ok=True)
    stem = name.replace("-", "_") + f"-{version}-"
    wheels = sorted(CACHE.glob(stem + "*.whl"))
    if not wheels:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                               "--only-binary=:all:", "-d", str(CACHE), requirement],
                              capture_output=True, text=True, timeout=300)
        wheels = sorted(CACHE.glob(stem + "*.whl"))
        if proc.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {requirement} (pip: {proc.stderr.strip()[-300:]})")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extractall(tmp)
    os.replace(tmp, target)
    return target


def _stub_libs(major: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: cannot build the stand-in libnvinfer the bindings link")
    out = CACHE / "stub" / major
    names = [f"lib{n}.so.{major}" for n in ("nvinfer", "nvonnxparser", "nvinfer_plugin")]
    if all((out / n).exists() for n in names):
        return out
    out.mkdir(parents=True, exist_ok=True)
    src = out / "stub.c"
    src.write_text(STUB_C)
    for n in names:
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(out / n), f"-Wl,-soname,{n}", str(src)],
                       check=True, capture_output=True, timeout=120)
    return out


def _probe(label: str, *args: str, timeout: int = 600) -> dict:
    requirement, major = VERSIONS[label]
    site, stubs = _fetch(requirement), _stub_libs(major)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]),
               LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(stubs), os.environ.get("LD_LIBRARY_PATH")])))
    proc = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE-JSON ")]
    assert proc.returncode == 0 and lines, f"probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("PROBE-JSON "):])


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    from lgseg_ros.model import build_model, get_config
    from lgseg_ros.runtime.export import export_onnx

    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    net = build_model(cfg).eval()
    out = tmp_path_factory.mktemp("trt_onnx")
    fp16 = export_onnx(net, out / "fp16.onnx", (64, 96), cfg.text_dim, precision="fp16")
    fp32 = export_onnx(net, out / "fp32.onnx", (64, 96), cfg.text_dim, precision="fp32")
    return str(fp16), str(fp32), cfg.text_dim


@pytest.fixture(scope="module", params=list(VERSIONS))
def built(request, onnx_pair):
    return request.param, _probe(request.param, "build", *[str(v) for v in onnx_pair])


@pytest.mark.parametrize("label", list(VERSIONS))
def test_every_feature_the_backend_uses_exists(label):
    """Feature detection finds everything on 10.3, newest 10.x and 11.x; the strongly typed
    flag is taken from the enum (its value moved: 1 in 10.x, 0 in 11.x); and 11.x really
    lacks the weak-typing API, which is why the backend never touches it."""
    api = _probe(label, "api")
    assert api["version"].startswith(label.split(".")[0] + ".")
    if label == "10.3":
        assert api["version"].startswith("10.3.")
    assert api["missing_features"] == []
    assert api["strongly_typed_flags"] == 1 << api["strongly_typed_enum_value"]
    is_11 = label.startswith("11")
    assert api["has_BuilderFlag_FP16"] is (not is_11)
    assert api["has_platform_has_fast_fp16"] is (not is_11)
    assert api["has_OBEY_PRECISION_CONSTRAINTS"] is (not is_11)
    # The harness fails where the real bindings would: the old weak-typing build path
    # (platform_has_fast_fp16 + BuilderFlag.FP16) is rejected on 11.x only, and a wrong
    # argument type is rejected everywhere.
    if is_11:
        assert "AttributeError" in api["old_fp16_path"], api["old_fp16_path"]
    else:
        assert api["old_fp16_path"] is None
    assert api["bad_argument"].startswith("TypeError"), api["bad_argument"]


def test_build_and_run_path_conforms_for_fp16_and_fp32(built):
    """The backend's build -> deserialise -> check -> bind -> label change -> execute path
    runs to the end against each version's real classes and signatures, for both the fp16
    and the fp32 graph, building strongly typed with no precision flag at all."""
    label, result = built
    for precision in ("fp16", "fp32"):
        run = result["runs"][precision]
        assert run["error"] is None, f"{label} {precision}: {run['error']}"
        assert run["engine_len"] > 0
        assert run["unchecked_types"] == [], run["unchecked_types"]
        calls = [c for c in run["calls"] if "call" in c]
        names = [c["call"] for c in calls]
        create = next(c for c in calls if c["call"] == "Builder.create_network")
        get_flag = next(c for c in calls if c["call"] == "INetworkDefinition.get_flag")
        assert get_flag["args"] == ["NetworkDefinitionCreationFlag.STRONGLY_TYPED"]
        flag_bit = 0 if label.startswith("11") else 1
        assert create["args"] == [1 << flag_bit]
        assert "IBuilderConfig.set_flag" not in names  # precision comes from the graph
        assert not any("platform_has" in c.get("get", "") for c in run["calls"])
        parsed = next(c for c in calls if c["call"] == "OnnxParser.parse_from_file")
        assert parsed["args"][0].endswith(f"{precision}.onnx")  # the graph carries the precision
        shape = next(c for c in calls if c["call"] == "IOptimizationProfile.set_shape")
        assert shape["args"] == ["text", [1, 384], [16, 384], [255, 384]]
        # Label changes: a new shape, a new address, shape inference, per K, no rebuild.
        assert names.count("IExecutionContext.set_input_shape") == 2
        assert names.count("IExecutionContext.execute_async_v3") == 2
        assert names.count("Builder.build_serialized_network") == 1
        assert sorted(c["args"][0] for c in calls if c["call"] == "ICudaEngine.get_tensor_dtype") \
            == ["confidence", "ids", "image", "text"]


def test_every_failure_tensorrt_reports_is_raised(built):
    """Each bool / None / index return and each output dtype is checked: when the stand-in
    answers with TensorRT's failure value the backend raises RuntimeError with a reason."""
    label, result = built
    for scenario, error in result["failures"].items():
        assert error is not None, f"{label}: {scenario} went unnoticed"
        assert error.startswith("RuntimeError"), f"{label}: {scenario}: {error}"


def test_real_builder_without_native_library_fails_with_a_reason(built):
    """No stand-ins: the real `trt.Builder(logger)` gets nullptr from the (stand-in) library,
    as on a driver/library mismatch; the backend turns that into a RuntimeError saying so."""
    label, result = built
    assert result["real_builder"] is not None
    assert "could not create a builder" in result["real_builder"]


@pytest.mark.parametrize("label", ["10.3", "11.x-newest"])
def test_auto_falls_back_when_tensorrt_fails_to_build(tmp_path, label):
    """`backend: auto` on a machine that reports CUDA and has TensorRT installed (10.3 as on
    JetPack 6, 11.x as from `pip install tensorrt`), whose
    build fails: auto logs the TensorRT failure, then torch on CUDA's, and serves frames
    from ONNX Runtime on CPU. Naming `tensorrt` explicitly raises with the reason.

    Stood in besides the native library: torch's answers to is_available / device name /
    capability (so that auto tries the GPU backends at all). Everything after is real."""
    result = _probe(label, "auto", str(tmp_path))
    assert result["resolve_auto"] == "tensorrt"
    assert result["chosen"] == ["onnxruntime", "cpu"]
    attempts = {(a["backend"], a["device"]): a for a in result["attempts"]}
    assert "could not create a builder" in attempts[("tensorrt", "cuda")]["failed"]
    assert "failed" in attempts[("torch", "cuda")]
    assert result["frame"] == [[64, 96], "int32", "float32"]
    log = "\n".join(result["log"])
    assert "backend auto: tensorrt on cuda failed, trying the next backend" in log
    assert "backend auto: torch on cuda failed" in log
    assert "backend auto -> onnxruntime on cpu" in log
    assert result["explicit"] is not None and "could not create a builder" in result["explicit"]
    # The failed build left no engine file behind to be served later.
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.parametrize("label", ["10.3", "11.x-newest"])
def test_a_configure_that_may_not_build_announces_no_build(tmp_path, label):
    """A later configure of the node builds nothing (allow_build=False): the engine cache
    logged "building TensorRT engine ... this may take several minutes" (and, for a cached
    engine that did not deserialise, "rebuilding") just before the backend refused to build.
    The build line comes only where a build really starts."""
    from lgseg_ros.runtime.artefacts import NO_BUILD_NOW

    result = _probe(label, "no_build", str(tmp_path))
    for case, why in (("miss", "no cached engine"), ("undeserialisable", "the cached one did not deserialise")):
        run = result[case]
        assert run["error"] and run["error"].startswith("RuntimeError"), (case, run)
        assert NO_BUILD_NOW in run["error"] and why in run["error"], (case, run["error"])
        assert not [line for line in run["log"] if "building" in line], (case, run["log"])
    # Where a build does start, it is announced, as before.
    first = result["first_build"]
    assert any("building TensorRT engine" in line for line in first["log"]), first["log"]
    assert "could not deserialise a freshly built engine" in first["error"], first["error"]
    assert result["engines"] == 1
