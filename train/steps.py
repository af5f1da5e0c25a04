"""Step strategies: how one micro-batch becomes a training step. The loss computes a loss; a step
strategy runs backward and (on an accumulation boundary) the optimizer step through the engine.

- :class:`PlainStep`: compute the loss, back-propagate it: any task.
- :class:`CachedStep`: cached gradients (GradCache) for a bi-encoder batch larger than memory, while
  every query still sees the whole batch's negatives.
"""

from __future__ import annotations

import torch

from train.losses import embed


class PlainStep:
    def __init__(self, loss):
        self.loss = loss

    def __call__(self, engine, batch: dict) -> tuple[torch.Tensor, dict, bool]:
        """(loss, logged figures, whether the optimizer stepped)."""
        loss, logged = self.loss.compute(engine, batch)
        return loss, logged, engine.backward_step(loss)


class CachedStep:
    """A bi-encoder loss (:class:`~train.losses.InfoNCELoss`) over a large batch in chunks, with the
    exact gradient of the full batch.

    GradCache (Gao et al., 2021): (1) embed every text chunk by chunk without a graph; (2) the loss
    over the whole batch (all workers') on those embeddings, backward to the embeddings only; (3)
    re-embed each chunk with a graph, under the same dropout randomness, and back-propagate the
    cached embedding gradients into the model. Memory is one chunk's activations; negatives are the
    batch's. Each chunk's backward is one micro-step of the engine."""

    def __init__(self, loss, chunk: int):
        self.loss, self.chunk = loss, chunk

    def __call__(self, engine, batch: dict) -> tuple[torch.Tensor, dict, bool]:
        starts = range(0, len(batch["query_ids"]), self.chunk)
        rng, reps = {}, {}
        with torch.no_grad():
            for name in self.loss.texts():
                parts = []
                for s in starts:
                    rng[name, s] = _rng_state()
                    parts.append(self._embed(engine, batch, name, s))
                reps[name] = torch.cat(parts).requires_grad_()
        loss, logged = self.loss(reps, batch)
        loss.backward()
        after = _rng_state()
        stepped = False
        for s in starts:
            surrogate = 0.0
            for name in self.loss.texts():
                _set_rng_state(rng[name, s])
                emb = self._embed(engine, batch, name, s)
                surrogate = surrogate + (emb * reps[name].grad[s:s + self.chunk]).sum()
            stepped = engine.backward_step(surrogate, whole=True)
        _set_rng_state(after)
        return loss.detach(), logged, stepped

    def _embed(self, engine, batch: dict, name: str, start: int) -> torch.Tensor:
        end = start + self.chunk
        return embed(engine, batch[f"{name}_ids"][start:end], batch[f"{name}_mask"][start:end])


def _rng_state():
    """Dropout's randomness (CPU and, where used, the current GPU), to replay a forward pass exactly."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])
