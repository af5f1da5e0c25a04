"""LoRA (through ``peft``): train small low-rank adapters instead of every weight.

With ``lora_rank > 0`` the encoder's linear layers get rank-r adapters and only those train (about
1-2% of MiniLM's weights): less optimizer memory, smaller DeepSpeed shards, and the same training
loop, loss and checkpoints. At export the adapters are merged into the weights, so the exported
folder is a plain sentence-transformers model that serves exactly like a fully fine-tuned one.
"""

from __future__ import annotations

import logging

from common.errors import ConfigError

log = logging.getLogger(__name__)


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=[m.strip() for m in cfg.lora_targets.split(",") if m.strip()])


def add_adapters(model, cfg):
    """Wrap ``model`` with trainable LoRA adapters; the original weights are frozen."""
    from peft import get_peft_model

    try:
        model = get_peft_model(model, lora_config(cfg))
    except ValueError as err:  # peft names the target modules it could not find
        raise ConfigError("lora_targets", f"{cfg.lora_targets!r} does not fit this model ({err})",
                          "name linear layers of the model, e.g. query,key,value,dense for BERT-family "
                          "encoders") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("[train] LoRA rank %d on %s: %d of %d weights train (%.2f%%)", cfg.lora_rank, cfg.lora_targets,
             trainable, total, 100 * trainable / total)
    return model


def base_model(model):
    """The plain transformer under a LoRA wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merged(model, weights: dict, cfg):
    """Load a LoRA training state into ``model`` (a fresh base model) and merge the adapters in."""
    wrapped = add_adapters(model, cfg)
    missing, unexpected = wrapped.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"LoRA checkpoint does not match its model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return wrapped.merge_and_unload()
