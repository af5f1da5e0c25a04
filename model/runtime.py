"""How an encoder runs wherever one is loaded (embed, evaluate, serve): one component, so a setting
means the same in every stage and is set in one place.

Token lengths are per role: product texts ("passage") are long, shoppers' queries short. A model
folder that records what it was trained with (``firstlight.json``) is not overridden unless a
length is set here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_range
from common.hardware import GpuChoice, check_backend, check_use_gpu, gpu_choice


@dataclass
class EncoderRuntime:
    backend: str = field(default="auto", metadata={
        "help": "inference backend of the encoder and the reranker: auto (int8 on a CPU, bf16 on a GPU with "
                "bf16 units), fp32, bf16 or int8 (ONNX Runtime, CPU); docs/speed.md"})
    use_gpu: GpuChoice = field(default="auto", metadata={
        "help": "models and the FAISS index on a GPU: auto (where one is visible), yes or no"})
    query_max_length: int = field(default=64, metadata={"help": "tokens kept per query (shopper text)"})
    product_max_length: int = field(default=64, metadata={"help": "tokens kept per product text"})

    def __post_init__(self):
        self.use_gpu = gpu_choice(self.use_gpu)

    def validate(self, prefix: str = "runtime.") -> None:
        check_backend(prefix + "backend", self.backend)
        check_use_gpu(prefix + "use_gpu", self.use_gpu)
        check_range(prefix + "query_max_length", self.query_max_length, 1, 8192)
        check_range(prefix + "product_max_length", self.product_max_length, 1, 8192)

    @property
    def device(self) -> str:
        """The device argument of the model loaders (model/encoder.py pick_device)."""
        return "cpu" if self.use_gpu == "no" else ("cuda" if self.use_gpu == "yes" else "auto")

    def int8_on_cpu(self, gpus: float) -> bool:
        """Whether a model loaded with this runtime and given ``gpus`` runs the int8 backend on a CPU
        (auto picks int8 there): where model/onnx_text.py can stand in for it without torch."""
        return gpus == 0 and self.use_gpu != "yes" and self.backend in ("auto", "int8")

    @property
    def lengths(self) -> dict:
        """Token lengths by encoder role (model/encoder.py ROLES); None: a model without roles."""
        return {"query": self.query_max_length, "passage": self.product_max_length, None: self.product_max_length}
