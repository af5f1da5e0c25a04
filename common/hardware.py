"""What this machine's processors can do fast: decided by looking, never assumed.

bf16 pays on CPUs with bf16 units (AMX or AVX512-BF16): MiniLM trains 1.5-2x faster than in fp32 with
the same quality; elsewhere it is emulated and slower. GPUs from Ampere on compute bf16 natively.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from common.errors import ConfigError

# Inference backends (model/backends.py says what each is); here so that configs loaded without torch
# (the serve gateway's) can check the choice.
BACKENDS = ("auto", "fp32", "bf16", "int8")


def check_backend(field_name: str, backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(field_name, f"{backend!r} is not an inference backend",
                          f"use one of {', '.join(BACKENDS)} (auto: int8 on a CPU, bf16 on a GPU with bf16 units)")


# One meaning of ``use_gpu`` in every stage: auto (a GPU where one is visible), yes (fail without
# one) or no. Recipe files and commands written when training took a boolean still load: true is
# yes, false is no.
USE_GPU = ("auto", "yes", "no")


# a ``use_gpu`` setting: auto, yes or no; ``true``/``false`` (recipes from when it was a boolean) load too
GpuChoice = str | bool


def gpu_choice(value) -> str:
    """``value`` as one of USE_GPU (booleans and their spellings mapped); anything else unchanged, for
    :func:`check_use_gpu` to name."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    low = str(value).strip().lower()
    return {"true": "yes", "1": "yes", "on": "yes", "false": "no", "0": "no", "off": "no"}.get(low, low)


def check_use_gpu(field_name: str, value: str) -> None:
    if value not in USE_GPU:
        raise ConfigError(field_name, f"{value!r} is not a GPU choice",
                          "use auto (a GPU where one is visible), yes (fail without one) or no")


BF16_FLAGS = (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))


@lru_cache(maxsize=1)
def cpu_bf16_units() -> tuple[str, ...]:
    """Names of this CPU's bf16 instruction sets (empty when it has none or the kernel does not say)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return tuple(name for flag, name in BF16_FLAGS if flag in flags)


def cpu_has_bf16() -> bool:
    return bool(cpu_bf16_units())


def gpu_has_bf16() -> bool:
    """True when this process sees a CUDA GPU that computes bf16 natively."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
