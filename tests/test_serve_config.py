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
