"""AdamW parameter groups: weight decay where it belongs, and layer-wise learning-rate decay.

Layer-wise decay (``layer_lr_decay`` d < 1) gives the top transformer layer the peak learning rate
and each layer below it d times the one above; the embeddings sit one step below the first layer.
Lower layers hold the general language the pretrained encoder learned from far more text than a
shop's judgments; changing them less keeps the words of unseen queries where pretraining put them,
while the upper layers adapt to the catalogue. d = 1 trains every layer at the same rate.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)
_NO_DECAY = ("bias", "LayerNorm.weight")
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for transformer layer i, num_layers + 1 for what sits above
    (the pooler, or any head)."""
    if "embeddings." in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def optimizer_groups(named_parameters, lr: float, weight_decay: float, layer_lr_decay: float = 1.0,
                     num_layers: int = 0) -> list[dict]:
    """Groups for torch.optim.AdamW, top layer first (so the first group's rate is the peak rate
    that progress logs report). Frozen parameters are left out."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:  # LoRA freezes the base weights
            continue
        depth = layer_depth(name, num_layers) if layer_lr_decay != 1.0 else num_layers + 1
        decays = not name.endswith(_NO_DECAY)
        group = groups.setdefault((depth, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * layer_lr_decay ** (num_layers + 1 - depth)})
        group["params"].append(param)
    if layer_lr_decay != 1.0 and {depth for depth, _ in groups} <= {num_layers + 1}:
        log.warning("[train] --layer-lr-decay %g found no embeddings or `layer.N.` parameters in this model: "
                    "every parameter trains at the top rate", layer_lr_decay)
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], not k[1]))]
