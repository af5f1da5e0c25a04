"""LoRA (through ``peft``): train small low-rank adapters instead of every weight.

With ``lora.rank > 0`` the encoder's linear layers get rank-r adapters and only those train (about
1-2% of MiniLM's weights): less optimizer memory, smaller DeepSpeed shards, and the same training
loop, loss and checkpoints. At export the adapters are merged into the weights, so the exported
folder is a plain sentence-transformers model that serves exactly like a fully fine-tuned one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from common.config import check_range
from common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LoRA:
    """Low-rank adapters in place of full fine-tuning (rank 0 = train every weight)."""

    rank: int = field(default=0, metadata={"help": "LoRA adapter rank (0 = train every weight)"})
    alpha: float = field(default=32.0, metadata={"help": "LoRA scaling numerator (update scale alpha/rank)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA adapter input"})
    targets: str = field(default="query,key,value,dense", metadata={
        "help": "comma-separated names of the linear layers that get adapters"})

    def validate(self, prefix: str = "lora.") -> None:
        check_range(prefix + "rank", self.rank, 0)
        if self.rank:
            check_range(prefix + "alpha", self.alpha, 0.0, low_inclusive=False)
            check_range(prefix + "dropout", self.dropout, 0.0, 1.0)
            if not self.targets.strip(","):
                raise ConfigError(prefix + "targets", "is empty", "name the linear layers, e.g. query,key,value,dense")


def lora_config(lora: LoRA):
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=[m.strip() for m in lora.targets.split(",") if m.strip()])


def add_adapters(model, lora: LoRA):
    """Wrap ``model`` with trainable LoRA adapters; the original weights are frozen."""
    from peft import get_peft_model

    try:
        model = get_peft_model(model, lora_config(lora))
    except ValueError as err:  # peft names the target modules it could not find
        raise ConfigError("lora.targets", f"{lora.targets!r} does not fit this model ({err})",
                          "name linear layers of the model, e.g. query,key,value,dense for BERT-family "
                          "encoders") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("[train] LoRA rank %d on %s: %d of %d weights train (%.2f%%)", lora.rank, lora.targets,
             trainable, total, 100 * trainable / total)
    return model


def base_model(model):
    """The plain transformer under a LoRA wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merged(model, weights: dict, lora: LoRA):
    """Load a LoRA training state into ``model`` (a fresh base model) and merge the adapters in."""
    wrapped = add_adapters(model, lora)
    missing, unexpected = wrapped.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"LoRA checkpoint does not match its model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return wrapped.merge_and_unload()
