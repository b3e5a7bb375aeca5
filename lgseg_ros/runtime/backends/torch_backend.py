"""torch backend: eager fp32 on CPU; fp16 with CUDA graphs on CUDA.

On a GPU this network is launch-bound in eager mode (hundreds of small kernels; about 9 ms
eager against about 1 ms replayed at 384x480 on an H100 in a prototype), so on CUDA every
(H, W, K) shape is captured once into a torch.cuda.CUDAGraph over static input buffers and
replayed per frame. A new shape (new label count, new frame size) captures a new graph; a
few are kept so that switching back and forth between label sets does not re-capture.
"""
from __future__ import annotations

import collections
import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..frame_path import FramePath
from . import check_embeddings, check_image, text_dim_of

log = logging.getLogger(__name__)


def resolve_precision(precision: str, device: str) -> str:
    if precision not in ("auto", "fp32", "fp16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'fp16', not {precision!r}")
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    if precision == "fp16" and device == "cpu":
        # Half precision on CPU is slower than fp32 and less accurate: never what one wants.
        log.warning("fp16 requested on CPU; running fp32 instead")
        return "fp32"
    return precision


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    image: torch.Tensor          # static inputs, written before each replay
    text: torch.Tensor
    ids: torch.Tensor            # static outputs, overwritten by each replay
    confidence: torch.Tensor
    host_ids: torch.Tensor       # pinned host copies, so device->host is one async copy
    host_conf: torch.Tensor
    text_version: int = -1


class TorchBackend:
    name = "torch"

    def __init__(self, net, cfg=None, device: str = "auto", precision: str = "fp32",
                 cuda_graphs: bool = True, max_graphs: int = 4, net_size=None,
                 num_threads: int | None = None, **_ignored) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch backend: device='cuda' but torch sees no CUDA device")
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.text_dim = text_dim_of(cfg)
        if num_threads:
            torch.set_num_threads(int(num_threads))
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self._dtype = dtype
        if device != "cpu" or dtype != torch.float32:
            # Module.to() works in place: copy, so the caller's fp32 CPU net (shared with other
            # backends, exports and parity checks) is left as it was.
            net = copy.deepcopy(net)
        self.frame = FramePath(net).eval().to(device=device, dtype=dtype)
        self.use_graphs = bool(cuda_graphs) and device == "cuda"
        self._graphs: collections.OrderedDict[tuple, _Graph] = collections.OrderedDict()
        self._max_graphs = max(1, int(max_graphs))
        self._text: torch.Tensor | None = None
        self._text_version = 0
        if device == "cuda":
            # Convolution algorithm search once per shape pays off over thousands of frames.
            torch.backends.cudnn.benchmark = True
            self._stream = torch.cuda.Stream()
            self._host_image: torch.Tensor | None = None
        self.captures = 0  # how many graphs were captured (tests and logs read it)

    # -- labels -----------------------------------------------------------------------
    def set_labels(self, embeddings: np.ndarray) -> None:
        emb = check_embeddings(embeddings, self.text_dim)
        self._text = torch.tensor(emb, device=self.device, dtype=self._dtype)  # copies: LabelSet rows are read-only
        self._text_version += 1

    # -- frames -----------------------------------------------------------------------
    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = check_image(image)
        if self._text is None:
            raise RuntimeError("set_labels() must be called before infer()")
        if self.device == "cpu":
            with torch.inference_mode():
                ids, conf = self.frame(torch.from_numpy(image), self._text)
            return ids[0].numpy(), conf[0].numpy()
        if not self.use_graphs:
            return self._infer_cuda_eager(image)
        return self._infer_graph(image)

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        # Pinned staging buffer: lets the host->device copy run asynchronously on our stream.
        if self._host_image is None or self._host_image.shape != image.shape:
            self._host_image = torch.empty(image.shape, dtype=torch.float32, pin_memory=True)
        self._host_image.numpy()[...] = image
        return self._host_image

    def _infer_cuda_eager(self, image: np.ndarray):
        host = self._upload(image)
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream), torch.inference_mode():
            x = host.to(self.device, non_blocking=True).to(self._dtype)
            ids, conf = self.frame(x, self._text)
            ids, conf = ids[0].cpu(), conf[0].cpu()
        return ids.numpy(), conf.numpy()

    def _capture(self, key: tuple) -> _Graph:
        h, w, k = key
        dev = self.device
        static_image = torch.zeros((1, 3, h, w), device=dev, dtype=self._dtype)
        static_text = self._text.clone()
        # Warm-up on a side stream, as torch's CUDA-graph recipe requires: it runs lazy
        # initialisation (cuDNN autotuning, workspace allocation) outside the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.frame(static_image, static_text)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # Each graph gets its own memory pool: graphs replay in arbitrary order when label
        # sets switch back and forth, which a shared pool does not allow.
        with torch.inference_mode(), torch.cuda.graph(graph):
            ids, conf = self.frame(static_image, static_text)
        self.captures += 1
        log.info("captured CUDA graph for %dx%d, K=%d (%d cached)", h, w, k, len(self._graphs) + 1)
        return _Graph(graph, static_image, static_text, ids, conf,
                      torch.empty((h, w), dtype=ids.dtype, pin_memory=True),
                      torch.empty((h, w), dtype=conf.dtype, pin_memory=True),
                      self._text_version)

    def _infer_graph(self, image: np.ndarray):
        key = (image.shape[2], image.shape[3], int(self._text.shape[0]))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key)
            self._graphs[key] = entry
            while len(self._graphs) > self._max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        host = self._upload(image)
        # set_labels() wrote self._text on the default stream; order our copies after it.
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            if entry.text_version != self._text_version:
                entry.text.copy_(self._text)  # same K, new labels: refresh the static buffer
                entry.text_version = self._text_version
            entry.image.copy_(host, non_blocking=True)  # also casts fp32 -> fp16
            entry.graph.replay()
            entry.host_ids.copy_(entry.ids[0], non_blocking=True)
            entry.host_conf.copy_(entry.confidence[0], non_blocking=True)
        self._stream.synchronize()
        # Copies: the pinned buffers are overwritten by the next frame.
        return entry.host_ids.numpy().copy(), entry.host_conf.numpy().copy()
