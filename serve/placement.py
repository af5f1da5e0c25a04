"""Every configured deployment placed, or a refusal at start that says which one and how to fix it.

Ray Serve waits, silently, for resources that never come: a Reranker asking for 1 CPU on a 2-core
machine where the other deployments took 1.75 is never placed, and every request then waits out the
rerank timeout. Before deploying, `firstlight serve` compares the reservations of each deployment's
minimum replicas with the CPUs and GPUs the Ray cluster has free:

- reservations left at their defaults shrink, in proportion, until everything fits (each replica
  keeps at least ``MIN_CPUS``), and those deployments stop autoscaling beyond their minimum (a
  replica added to a full cluster would wait forever too); where the cluster has room, the Encoder
  and the Reranker autoscale on their queues as configured;
- reservations the user set are kept; when those alone cannot fit, or the defaults cannot shrink
  enough, it stops with the deployment, what it needs, what is free and the flag that fixes it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

from common.errors import ConfigError
from serve.config import ServeConfig

log = logging.getLogger(__name__)

MIN_CPUS = 0.1  # the smallest reservation a default shrinks to: a replica still gets scheduled time


def deployments(cfg: ServeConfig) -> list[str]:
    """The deployments this config runs (the Reranker only with a reranker model)."""
    return ["encoder", "retriever", "gateway"] + (["reranker"] if cfg.rerank.model else [])


def fit_to_cluster(cfg: ServeConfig, free: dict) -> ServeConfig:
    """``cfg`` with default CPU reservations scaled to fit ``free`` (Ray's available resources); a
    ConfigError naming the deployment that cannot be placed."""
    names = deployments(cfg)
    _check_gpus(cfg, names, free.get("GPU", 0.0))
    cpus = free.get("CPU", 0.0)
    need = {name: _cpus(cfg, name) for name in names}
    if sum(need.values()) <= cpus + 1e-9:
        return cfg
    default = ServeConfig()
    fixed = [n for n in names if getattr(cfg, n).num_cpus != getattr(default, n).num_cpus]
    flexible = [n for n in names if n not in fixed]
    room = cpus - sum(need[n] for n in fixed)
    replicas = sum(getattr(cfg, n).min_replicas for n in flexible)
    if not flexible or room < MIN_CPUS * replicas:
        raise _refusal(cfg, names, need, cpus, fixed)
    scale = room / sum(need[n] for n in flexible)
    changes = {}
    for name in flexible:
        resources = getattr(cfg, name)
        # rounded down to a hundredth, so the sum never passes what is free
        share = max(MIN_CPUS, math.floor(resources.num_cpus * scale * 100) / 100)
        # the cluster is full: a replica the autoscaler added could never be placed either
        changes[name] = replace(resources, num_cpus=share, max_replicas=resources.min_replicas)
    if sum(getattr(cfg, n).min_replicas * changes[n].num_cpus for n in flexible) > room + 1e-9:
        raise _refusal(cfg, names, need, cpus, fixed)  # too many replicas to give each MIN_CPUS
    log.info("[serve] the Ray cluster has %.2f CPU free; default reservations scaled to fit (and no autoscaling "
             "beyond them, there is no room): %s", cpus,
             ", ".join(f"{n} {getattr(cfg, n).num_cpus:g} -> {changes[n].num_cpus:g} CPU" for n in flexible))
    return replace(cfg, **changes)


def _cpus(cfg: ServeConfig, name: str) -> float:
    resources = getattr(cfg, name)
    return resources.min_replicas * resources.num_cpus


def _check_gpus(cfg: ServeConfig, names: list[str], gpus: float) -> None:
    wanted = {n: getattr(cfg, n).min_replicas * getattr(cfg, n).num_gpus for n in names}
    if sum(wanted.values()) > gpus + 1e-9:
        name = max(wanted, key=wanted.get)
        raise ConfigError(f"{name}.num_gpus", f"the {name} deployment needs {wanted[name]:g} GPU for its replicas "
                          f"and all deployments {sum(wanted.values()):g}, but the Ray cluster has {gpus:g} free",
                          f"lower --{name}.num_gpus (0 runs it on CPU) or start Ray where the GPUs are")


def _refusal(cfg: ServeConfig, names: list[str], need: dict, cpus: float, fixed: list[str]) -> ConfigError:
    # the deployment to name: the largest one the user set, else the largest
    name = max(fixed or names, key=need.get)
    # what the others need at the least: their set reservations, the defaults shrunk to MIN_CPUS
    others = sum(need[n] if n in fixed else MIN_CPUS * getattr(cfg, n).min_replicas for n in names if n != name)
    left = max(0.0, math.floor((cpus - others) * 100) / 100)
    fits = math.floor(left / getattr(cfg, name).min_replicas * 100) / 100
    listing = ", ".join(f"{n} {need[n]:g}" for n in names)
    fix = (f"set --{name}.num_cpus {fits:g} or less" if fits >= MIN_CPUS else
           f"lower the others' --DEPLOYMENT.num_cpus or --{name}.min_replicas")
    return ConfigError(f"{name}.num_cpus", f"the {name} deployment needs {need[name]:g} CPU but at most {left:g} "
                       f"of the Ray cluster's {cpus:g} free CPUs can be left for it (asked: {listing}), so it "
                       "would never be placed",
                       f"{fix}, or give Ray more CPUs (`ray start --num-cpus`, or a bigger cluster)")
