"""Paired comparisons of two systems over the same queries (bootstrap confidence intervals)."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a, b, n_resamples: int = 10000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean of ``a - b`` over queries with a paired bootstrap interval (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same queries: {a.shape} vs {b.shape}")
    res = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                    n_resamples=n_resamples, confidence_level=confidence, random_state=seed, method="percentile")
    return {"mean_diff": float(np.mean(a - b)), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "queries": int(a.size)}


def per_query(results: dict, system: str, metric: str) -> list[float]:
    return results["systems"][system]["per_query"][metric]
