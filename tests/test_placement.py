"""Every configured deployment is placed, or `firstlight serve` refuses at start naming which one and
the flag that fixes it: Ray Serve would otherwise wait forever for a replica it cannot place."""

from __future__ import annotations

import json

import pytest

from common.errors import ConfigError
from serve.config import ServeConfig
from serve.placement import MIN_CPUS, fit_to_cluster


def with_reranker(**settings) -> ServeConfig:
    return ServeConfig.from_args({"index_dir": "i", "rerank.model": "r", **settings})


def reserved(cfg: ServeConfig, names=("encoder", "retriever", "gateway", "reranker")) -> float:
    return sum(getattr(cfg, n).min_replicas * getattr(cfg, n).num_cpus for n in names)


def test_default_reservations_shrink_to_fit_a_two_cpu_ray_with_the_reranker():
    cfg = with_reranker()
    assert reserved(cfg) == 2.75  # encoder 1 + retriever 0.5 + gateway 0.25 + reranker 1: one would never start
    fitted = fit_to_cluster(cfg, {"CPU": 2.0})
    assert reserved(fitted) <= 2.0
    assert all(getattr(fitted, n).num_cpus >= MIN_CPUS for n in ("encoder", "retriever", "gateway", "reranker"))
    # in proportion: the encoder and the reranker keep the larger shares
    assert fitted.encoder.num_cpus == fitted.reranker.num_cpus > fitted.retriever.num_cpus > fitted.gateway.num_cpus
    assert fitted.first_stage == cfg.first_stage and fitted.rerank == cfg.rerank  # nothing else changes
    # a full cluster has no room for an autoscaled replica: the minimum is all there is
    assert cfg.reranker.max_replicas == cfg.encoder.max_replicas == 4
    assert all(getattr(fitted, n).max_replicas == getattr(fitted, n).min_replicas for n in ("encoder", "reranker"))


def test_what_fits_is_left_alone_and_what_the_user_set_is_kept():
    cfg = with_reranker()
    assert fit_to_cluster(cfg, {"CPU": 4.0}) == cfg  # autoscaling as configured, where there is room
    fitted = fit_to_cluster(with_reranker(**{"reranker.num_cpus": 1.0, "encoder.num_cpus": 0.5}), {"CPU": 2.0})
    # 1.0 was asked for explicitly only where it differs from the default: the encoder's 0.5 is kept,
    # the reranker's 1.0 equals the default and may shrink
    assert fitted.encoder.num_cpus == 0.5 and reserved(fitted) <= 2.0


@pytest.mark.parametrize("settings, field, hint", [
    ({"reranker.num_cpus": 4.0}, "reranker.num_cpus", "--reranker.num_cpus"),
    ({"encoder.num_cpus": 1.5, "reranker.num_cpus": 1.5}, "encoder.num_cpus", "or less"),
    ({"reranker.num_gpus": 1.0}, "reranker.num_gpus", "--reranker.num_gpus"),
])
def test_a_configuration_that_cannot_be_placed_is_refused_naming_the_deployment(settings, field, hint):
    with pytest.raises(ConfigError) as err:
        fit_to_cluster(with_reranker(**settings), {"CPU": 2.0})
    assert err.value.field == field and hint in str(err.value) and "free" in str(err.value)


def test_serve_refuses_at_start_on_a_two_cpu_ray_before_deploying(tmp_path, ray_session, capsys):
    """The command of the issue, on the test session's 2-CPU Ray, with a reranker that cannot fit."""
    from firstlight.cli import main

    (tmp_path / "data" / "catalogue").mkdir(parents=True)
    index = tmp_path / "index"
    index.mkdir()
    (index / "index.faiss").write_bytes(b"")
    (index / "manifest.json").write_text(json.dumps({"model": "m", "prepared_dir": str(tmp_path / "data")}))
    (tmp_path / "reranker").mkdir()
    (tmp_path / "reranker" / "config.json").write_text("{}")
    code = main(["serve", "--index_dir", str(index), "--rerank.model", str(tmp_path / "reranker"),
                 "--reranker.num_cpus", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "'reranker.num_cpus'" in err and "never be placed" in err and "Traceback" not in err
    from ray import serve

    assert "firstlight" not in serve.status().applications  # nothing was deployed
