"""Training pairs from what shoppers did (``firstlight train --events DIR``), with no judgments file.

- **Positives**: each clicked product of a logged list (with bias correction, a purchase weighs
  ``purchase_weight`` times).
- **Negatives**: a product shown above the click and skipped (looked at, most likely, and passed
  over); where the click was first, one shown below it and not clicked.
- **Position bias** (``correction``; naive, every click once, is the default: it measured as well as
  the corrected one on simulated Home Depot traffic, benchmarks/RESULTS.md "Cold to warm"): a product shown lower is clicked less whatever its relevance, so a naive count
  learns the old ranking back. With ``correction: ipw`` each click is weighted by 1 / p(position),
  the chance that position is looked at, and pairs are drawn in proportion to their weights. p is
  estimated from the logs themselves: in the small randomised share of
  lists where the server swapped its first product with the one at position j (events.swap_share),
  the first product's click rate at j against its click rate at 1 is p(j) / p(1) (Joachims et al.,
  2017, "swap interventions"). A power law p(j) = j^-eta is fitted to those swaps by maximum
  likelihood, so sparse positions borrow strength from the rest.
- **Validation** (checkpoint choice) uses held-out queries' clicks, never judgments.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common.config import check_choice, check_range
from common.errors import ConfigError

log = logging.getLogger(__name__)

CORRECTIONS = ("ipw", "naive")


@dataclass
class ClickPairs:
    """How clicks become training pairs. Flags ``--clicks.correction naive``."""

    correction: str = field(default="naive", metadata={
        "help": "naive: every click counts once (measured best on Home Depot's simulated traffic); ipw: weight "
                "each click by 1 / the estimated chance its position was looked at (position bias from the "
                "logs' swaps)"})
    purchase_weight: float = field(default=2.0, metadata={"help": "a purchased product counts this many clicks"})
    max_weight: float = field(default=10.0, metadata={"help": "the largest weight one click gets (clipped: variance)"})
    min_swaps: int = field(default=40, metadata={
        "help": "swapped lists needed to estimate position bias (fewer: an error naming events.swap_share)"})
    val_share: float = field(default=0.1, metadata={
        "help": "share of queries (by hash) held out to pick the checkpoint by their clicks"})

    def validate(self, prefix: str = "clicks.") -> None:
        check_choice(prefix + "correction", self.correction, CORRECTIONS)
        check_range(prefix + "purchase_weight", self.purchase_weight, 0.0, low_inclusive=False)
        check_range(prefix + "max_weight", self.max_weight, 1.0)
        check_range(prefix + "min_swaps", self.min_swaps, 1)
        check_range(prefix + "val_share", self.val_share, 0.0, 0.5)


@dataclass(frozen=True)
class PositionBias:
    """p(position is looked at), p(1) = 1, from swap interventions."""

    eta: float
    ratios: dict  # position -> (measured p(j)/p(1), swaps at j)

    def propensity(self, position: int) -> float:
        return float(position) ** -self.eta


def clicked(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (request, product) clicked, with whether it was also bought."""
    if events.empty:
        return pd.DataFrame(columns=["request_id", "product_id", "purchased"])
    bought = set(zip(*[events.loc[events["type"] == "purchase", c] for c in ("request_id", "product_id")]))
    clicks = events[events["type"] == "click"].drop_duplicates(["request_id", "product_id"])
    out = clicks[["request_id", "product_id"]].copy()
    out["purchased"] = [(r, p) in bought for r, p in zip(out["request_id"], out["product_id"])]
    return out.reset_index(drop=True)


def estimate_bias(impressions: pd.DataFrame, clicks: pd.DataFrame, min_swaps: int) -> PositionBias:
    """The eta of p(j) = j^-eta that makes the swap experiments' clicks most likely: in a list swapped
    with j, the ranking's first product is clicked with probability t * j^-eta, t being its click rate
    where it stayed first. Maximum likelihood over a grid (a position whose few swaps drew no click
    counts as evidence too, which a fit to measured ratios would have to drop)."""
    clicked_pairs = set(zip(clicks["request_id"], clicks["product_id"]))
    swapped = impressions[impressions["swap"].notna()]
    if len(swapped) < min_swaps:
        raise ConfigError("events", f"the log holds {len(swapped)} swapped lists; {min_swaps} are needed to estimate "
                          "position bias", "serve with events.swap_share > 0 (0.02 by default) for longer, lower "
                          "--clicks.min_swaps, or train with --clicks.correction naive")
    plain = impressions[impressions["swap"].isna()]
    top_rate = np.mean([(r, items[0]) in clicked_pairs for r, items in zip(plain["request_id"], plain["items"])
                        if len(items)])
    if not top_rate > 0:
        raise ConfigError("events", "no list's first product was ever clicked", "log more traffic")
    at: dict[int, list[bool]] = {}
    for request_id, items, swap in zip(swapped["request_id"], swapped["items"], swapped["swap"]):
        j = int(swap[1])
        if j <= len(items):  # the ranking's first product, shown at j
            at.setdefault(j, []).append((request_id, items[j - 1]) in clicked_pairs)
    positions = np.asarray([j for j, hits in at.items() for _ in hits], dtype=float)
    hits = np.asarray([h for j in at for h in at[j]], dtype=float)
    grid = np.linspace(0.0, 3.0, 301)
    p = np.clip(top_rate * positions[None, :] ** -grid[:, None], 1e-9, 1 - 1e-9)
    likelihood = (hits * np.log(p) + (1 - hits) * np.log(1 - p)).sum(axis=1)
    eta = float(grid[int(np.argmax(likelihood))])
    ratios = {j: (float(np.mean(h)) / top_rate, len(h)) for j, h in sorted(at.items())}
    return PositionBias(eta, ratios)


def held_out(query: str, share: float) -> bool:
    """Whether ``query`` is a validation query: a stable hash, so every run holds out the same ones."""
    digest = int.from_bytes(hashlib.blake2b(query.encode(), digest_size=4).digest(), "little")
    return digest % 10_000 < share * 10_000


def click_pairs(impressions: pd.DataFrame, events: pd.DataFrame, text: pd.Series, cfg: ClickPairs,
                seed: int, negatives: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(training pairs: query, positive, negative, has_negative as product texts; validation judgments
    of the held-out queries: query, product_id, relevance; a summary)."""
    clicks = clicked(events)
    bias = estimate_bias(impressions, clicks, cfg.min_swaps) if cfg.correction == "ipw" else None
    by_request = {r: g for r, g in clicks.groupby("request_id")}
    rows, val = [], []
    for request_id, query, items in zip(impressions["request_id"], impressions["query"], impressions["items"]):
        mine = by_request.get(request_id)
        if mine is None or not isinstance(query, str) or not query:
            continue
        hits = dict(zip(mine["product_id"], mine["purchased"]))
        if held_out(query, cfg.val_share):
            val += [(query, p, 3.0) for p in hits]
            continue
        skipped = [p for p in items if p not in hits and p in text.index]
        for product, purchased in hits.items():
            if product not in text.index or product not in items:
                continue
            position = items.index(product) + 1
            weight = 1.0  # naive: every click once
            if bias is not None:
                weight = (cfg.purchase_weight if purchased else 1.0) / bias.propensity(position)
            above = [p for p in skipped if items.index(p) < position - 1]
            below = [p for p in skipped if items.index(p) > position - 1]
            negative = (above[-1] if above else below[0] if below else None) if negatives else None
            rows.append((query, text[product], text[negative] if negative else "", negative is not None,
                         min(weight, cfg.max_weight)))
    pairs = pd.DataFrame(rows, columns=["query", "positive", "negative", "has_negative", "weight"])
    if pairs.empty:
        raise ConfigError("events", "the log holds no click on a product of the catalogue outside the held-out "
                          "queries", "log more traffic, or check that the server and training use one catalogue")
    if bias is not None:  # drawn in proportion to weight: the expected gradient of a weighted loss
        rng = np.random.default_rng(seed)
        drawn = rng.choice(len(pairs), size=len(pairs), p=pairs["weight"] / pairs["weight"].sum())
        pairs = pairs.iloc[drawn].reset_index(drop=True)
    summary = {"impressions": len(impressions), "clicks": len(clicks), "pairs": len(pairs),
               "distinct_pairs": int(pairs[["query", "positive"]].drop_duplicates().shape[0]),
               "val_queries": len({q for q, _, _ in val}), "correction": cfg.correction,
               "eta": bias.eta if bias else None,
               "swap_ratios": {str(j): [round(float(r), 3), int(n)] for j, (r, n) in bias.ratios.items()} if bias else None}
    val_frame = pd.DataFrame(val, columns=["query", "product_id", "relevance"]).drop_duplicates(["query", "product_id"])
    return pairs.drop(columns=["weight"]), val_frame, summary


def click_judgments(impressions: pd.DataFrame, events: pd.DataFrame, cfg: ClickPairs
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Graded judgments from the log, for a learner that wants labels rather than pairs (the reranker):
    per (query, product shown), its clicks over its expected examinations (the sum of p(position) over
    the lists it was in: an unbiased click rate where seen), 1 + 2 x that rate on the 1-3 scale. Only
    products with at least one expected examination are judged. (train, held-out) frames: query,
    product_id, relevance."""
    clicks = clicked(events)
    bias = estimate_bias(impressions, clicks, cfg.min_swaps) if cfg.correction == "ipw" else None
    clicked_pairs = set(zip(clicks["request_id"], clicks["product_id"]))
    seen: dict[tuple[str, str], list[float]] = {}
    for request_id, query, items in zip(impressions["request_id"], impressions["query"], impressions["items"]):
        if not isinstance(query, str) or not query:
            continue
        for position, product in enumerate(items, start=1):
            exposure = bias.propensity(position) if bias is not None else 1.0
            totals = seen.setdefault((query, product), [0.0, 0.0])
            totals[0] += exposure
            totals[1] += (request_id, product) in clicked_pairs
    rows = [(q, p, 1.0 + 2.0 * min(1.0, hits / exposure)) for (q, p), (exposure, hits) in seen.items()
            if exposure >= 1.0]
    frame = pd.DataFrame(rows, columns=["query", "product_id", "relevance"])
    held = frame["query"].map(lambda q: held_out(q, cfg.val_share)).astype(bool)
    summary = {"judged_pairs": len(frame), "queries": int(frame["query"].nunique()), "eta": bias.eta if bias else None}
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True), summary
