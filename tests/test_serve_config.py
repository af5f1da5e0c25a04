"""The serving config without a server: the shipped YAML files, strings from `serve run`, components and
their defaults, old flat keys, where the catalogue and the state live, the active version."""

from __future__ import annotations

import pytest

from serve.config import ServeConfig


def test_config_yaml_is_a_valid_serve_config_with_valid_args():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((Path(__file__).parent.parent / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "serve.app:build_app"
    cfg = ServeConfig.from_args(app.args)
    assert cfg.index_dir == "artifacts/homedepot/index" and cfg.encoder.max_replicas >= cfg.encoder.min_replicas


@pytest.mark.parametrize("path", ["serve/config.yaml", "cluster/kuberay/rayservice.yaml"])
def test_production_configs_run_two_replicas_of_every_deployment(path):
    """Losing one replica must lose no request: each deployment has another to retry on."""
    from pathlib import Path

    import yaml

    data = yaml.safe_load((Path(__file__).parent.parent / path).read_text())
    if "spec" in data:
        data = yaml.safe_load(data["spec"]["serveConfigV2"])
    cfg = ServeConfig.from_args(data["applications"][0]["args"])
    assert min(cfg.encoder.min_replicas, cfg.retriever.min_replicas, cfg.gateway.min_replicas) >= 2 and cfg.retries >= 1


def test_serving_options_from_yaml_strings_and_their_errors(tmp_path):
    from common.errors import ConfigError

    cfg = ServeConfig.from_args({"index_dir": str(tmp_path), "limits.max_k": "50", "encoder": {"batch_wait_s": "0.01"},
                                 "rerank": {"depth": "5"}})
    assert cfg.limits.max_k == 50 and cfg.encoder.batch_wait_s == 0.01 and cfg.rerank.depth == 5
    # a component keeps its owner's defaults for what is not given
    assert (cfg.encoder.max_replicas, cfg.encoder.num_cpus, cfg.retriever.batch_max_size) == (4, 1.0, 64)
    with pytest.raises(ConfigError, match="max_kk.*close: max_k"):
        ServeConfig.from_args({"limits": {"max_kk": 5}})
    with pytest.raises(ConfigError, match="'limits.max_k'.*'many' is not of type int"):
        ServeConfig.from_args({"limits.max_k": "many"})
    # a config written before the components names the new key
    with pytest.raises(ConfigError, match="'candidate_depth'.*first_stage.depth"):
        ServeConfig.from_args({"candidate_depth": 50})
    with pytest.raises(ConfigError, match="'reranker'.*rerank.model"):
        ServeConfig.from_args({"reranker": "models/reranker"})
    with pytest.raises(ConfigError, match="index_dir.*index.faiss"):
        ServeConfig.from_args({"index_dir": str(tmp_path)}).validate()


def test_active_version_survives_restarts_until_the_configuration_changes(tmp_path):
    from serve.versions import ActiveVersion, Version

    a, b, c = Version("m", "/index/a"), Version("m", "/index/b"), Version("m", "/index/c")
    first = ActiveVersion(str(tmp_path), default=a)
    first.set(b)  # a reload
    assert ActiveVersion(str(tmp_path), default=a).get() == b  # a restarted replica keeps the reload
    assert ActiveVersion(str(tmp_path), default=c).get() == c  # a new configuration wins


def test_an_index_in_its_own_folder_finds_the_catalogue_it_was_built_from(tmp_path):
    """`serve --index_dir artifacts/shop/finetuned/index` needs no --prepared_dir: the index records it."""
    import json

    (tmp_path / "data" / "catalogue").mkdir(parents=True)
    index = tmp_path / "finetuned" / "index"
    index.mkdir(parents=True)
    (index / "manifest.json").write_text(json.dumps({"model": "m", "prepared_dir": str(tmp_path / "data")}))
    assert ServeConfig.from_args({"index_dir": str(index)}).resolved_prepared_dir() == str(tmp_path / "data")
    # the stages' own layout, or an explicit folder, come first
    beside = tmp_path / "finetuned" / "data" / "catalogue"
    beside.mkdir(parents=True)
    assert ServeConfig.from_args({"index_dir": str(index)}).resolved_prepared_dir() == str(beside.parent)
    assert ServeConfig.from_args({"index_dir": str(index), "prepared_dir": "x"}).resolved_prepared_dir() == "x"


def test_admin_reloads_read_only_below_the_reload_roots(tmp_path):
    """An admin token does not open the whole machine: index and model folders must lie below the
    reload roots (default: the workdir and the served index's parent); a hub name is refused at once."""
    import json
    import time

    from serve.admin import checked_reload_target
    from serve.api import ApiError, ReloadRequest

    shop = tmp_path / "shop"
    for name in ("index", "index_v2"):
        (shop / name).mkdir(parents=True)
        (shop / name / "index.faiss").write_bytes(b"")
        (shop / name / "manifest.json").write_text(json.dumps({"model": "m"}))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "index.faiss").write_bytes(b"")
    roots = ServeConfig.from_args({"index_dir": str(shop / "index")}).resolved_reload_roots()
    assert str(shop.resolve()) in roots

    def code(**body):
        try:
            checked_reload_target(ReloadRequest(**body), roots)
        except ApiError as err:
            return err.code, err.field
        return "ok", None

    assert code(index_dir=str(shop / "index_v2")) == ("ok", None)
    assert code(index_dir=str(shop / "index_v2" / ".." / ".." / "elsewhere")) == ("outside_reload_roots", "index_dir")
    assert code(index_dir="/etc") == ("outside_reload_roots", "index_dir")
    assert code(index_dir=str(shop / "index_v2"), model=str(tmp_path / "elsewhere")) == ("outside_reload_roots", "model")
    start = time.perf_counter()
    assert code(index_dir=str(shop / "index_v2"), model="someone/some-model") == ("unloadable", "model")
    assert time.perf_counter() - start < 1  # refused at once, not after a hub's retries
    # bucket prefixes are roots too, and a root of their own is needed
    assert code(index_dir="s3://shop/index") == ("outside_reload_roots", "index_dir")
    explicit = ServeConfig.from_args({"index_dir": str(shop / "index"), "reload_roots": "s3://shop/,/srv/models"})
    assert explicit.resolved_reload_roots() == ("s3://shop/", "/srv/models")
