"""How a model's forward pass runs: the inference backend, one switch shared by embed, evaluate and serve.

- ``fp32``: torch, float32 weights. The reference every other backend is measured against.
- ``bf16``: torch with bfloat16 weights (pooling and scores stay float32). On CPUs with bf16 units
  (AVX512-BF16, AMX) MiniLM encodes ~1.9x faster than fp32 with cosine >= 0.9999 to it; on CPUs
  without them bf16 is emulated and slower. On GPUs from Ampere on it is the fast path.
- ``int8``: ONNX Runtime on the CPU, weights quantised to int8 dynamically (per channel), the way
  ``onnxruntime.quantization.quantize_dynamic`` and sentence-transformers' ONNX export make them.
  Vectors move more than in bf16 (mean cosine ~0.992 to fp32), rankings did not: on Home Depot's
  test split no figure of the encoder, the hybrid first stage or the reranker moved more than 0.0012
  from fp32, while titles/s went 2.4x, a query 8.8 -> 1.1 ms and a rerank of 10 64 -> 21 ms on 2 cores
  (benchmarks/RESULTS.md, "Inference backends"). A model of your own may quantise less well:
  ``firstlight evaluate --backend fp32`` and ``--backend int8`` side by side say.
- ``auto``: int8 on a CPU, bf16 on a GPU that computes it natively, fp32 on other GPUs.

OpenVINO and ONNX Runtime fp32 were measured too and bought nothing over torch here (see RESULTS.md,
"Tried and removed"), so they are not choices.

The int8 file is exported from the model folder once and cached (model/onnx_int8.py, which runs it
without torch); the write is atomic, so encoder actors starting together cannot read a half-written
file.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from common.errors import ConfigError
from common.hardware import check_backend, gpu_has_bf16
from common.runtime import verbose
from model.onnx_int8 import OnnxInt8, int8_file

log = logging.getLogger(__name__)

def resolve_backend(backend: str, device: torch.device, field_name: str = "backend") -> str:
    """The backend that will run: ``auto`` decided by the device; int8 refused on a GPU."""
    check_backend(field_name, backend)
    if backend == "auto":
        if device.type == "cpu":
            return "int8"
        return "bf16" if gpu_has_bf16() else "fp32"
    if backend == "int8" and device.type != "cpu":
        raise ConfigError(field_name, "int8 runs on the CPU (ONNX Runtime), not on a GPU",
                          "use auto or bf16 on a GPU, or --device cpu")
    return backend


def load_int8(net: torch.nn.Module, folder: str, kind: str, threads: int | None = None) -> OnnxInt8:
    """``net`` (loaded from ``folder``) as an int8 ONNX Runtime session: exported and quantised once,
    then read from the cache (model/onnx_int8.py). ``kind``: "encoder" (outputs last_hidden_state) or
    "reranker" (outputs logits)."""
    target = int8_file(folder, kind)
    if not target.exists():
        log.info("exporting %s to ONNX int8 (once; cached in %s)", Path(folder).resolve().name, target.parent)
        _export_int8(net, kind, target)
    return OnnxInt8(target, threads or torch.get_num_threads())


def export_int8_file(folder: str, kind: str = "encoder") -> Path:
    """The cached int8 file of the model in ``folder``, exported now if missing: for a process
    without torch (the Retriever), which runs this in a child process."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    target = int8_file(folder, kind)
    if not target.exists():
        loader = AutoModel if kind == "encoder" else AutoModelForSequenceClassification
        load_int8(loader.from_pretrained(folder), folder, kind, threads=1)
    return target


class _Outputs(torch.nn.Module):
    """Named inputs in, one tensor out: what the ONNX exporter traces."""

    def __init__(self, net, kind: str, inputs: list[str]):
        super().__init__()
        self.net, self.kind, self.names = net, kind, inputs

    def forward(self, *tensors):
        out = self.net(**dict(zip(self.names, tensors)))
        return out.last_hidden_state if self.kind == "encoder" else out.logits


def _export_int8(net: torch.nn.Module, kind: str, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    net = net.float().eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(net.forward).parameters:
        names.append("token_type_ids")
    example = tuple(torch.ones(2, 8, dtype=torch.int64) if n == "attention_mask" else
                    torch.zeros(2, 8, dtype=torch.int64) for n in names)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        axes = {n: {0: "batch", 1: "tokens"} for n in names}
        axes["output"] = {0: "batch", 1: "tokens"} if kind == "encoder" else {0: "batch"}
        quantized = Path(tmp) / target.name
        # The tracer warns about data-dependent branches the export fixes for a static graph (checked:
        # int8 scores within 0.0012 of fp32, RESULTS.md), and the quantiser logs a line per tensor and
        # a pre-processing hint on the root logger: nothing a user acts on, so shown with --verbose only.
        previous = logging.root.manager.disable
        with warnings.catch_warnings():
            if not verbose():
                warnings.simplefilter("ignore")
            logging.disable(logging.INFO if verbose() else logging.WARNING)
            try:
                with torch.no_grad():
                    torch.onnx.export(_Outputs(net, kind, names), example, str(fp32), input_names=names,
                                      output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False)
                quantize_dynamic(str(fp32), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                                 extra_options={"DefaultTensorType": 1})
            finally:
                logging.disable(previous)
        os.replace(quantized, target)  # atomic: a concurrent loader sees the whole file or none


if __name__ == "__main__":  # python -m model.backends FOLDER [encoder|reranker]: export, print the file
    import sys

    print(export_int8_file(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "encoder"))
