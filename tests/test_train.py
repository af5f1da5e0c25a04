"""Fine-tuning through Ray Train + DeepSpeed on CPU (gloo), with a tiny model on a real data slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.prepare import PrepareConfig, run_prepare
from train.config import TrainConfig

pytestmark = pytest.mark.training  # a slow kind: the quick tier (-m 'not slow') leaves these out


@pytest.fixture(scope="module")
def prepared(small_homedepot, tmp_path_factory, ray_session) -> Path:
    return run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                     output_dir=str(tmp_path_factory.mktemp("train_data") / "data")))


def tiny_config(prepared, tiny_model_dir, out, **overrides) -> TrainConfig:
    # fp32 and judged negatives unless a test asks: the same arithmetic on every CPU, no index to mine
    settings = dict(prepared_dir=str(prepared), output_dir=str(out), model=str(tiny_model_dir), num_workers=2,
                    cpus_per_worker=0.5, zero_stage=2, grad_accum=2, batch_size=8, max_steps=6,
                    checkpoint_every=3, val_queries=20, val_products=200, lr=1e-3, warmup_ratio=0.0,
                    precision="fp32", hard_negatives="judged", positive_at=2.5)
    settings.update(overrides)
    return config_of(TrainConfig, **settings)


def config_of(cls, **settings):
    """A training config from settings named as briefly as tests like them (``lr``, ``num_workers``),
    each put in its component by the config's map of names (``lr`` -> ``optim.lr``)."""
    from common.config import build_config

    return build_config(cls, {cls.RENAMED.get(name, name): value for name, value in settings.items()})


def three_step_history(prepared, tiny_model_dir, out, grad_cache_chunk: int = 0, **overrides):
    """Train 3 steps on one worker (batch 16, one checkpoint, no validation); the per-step metrics."""
    from train.driver import fit
    from train.progress import read_history

    settings = dict(num_workers=1, cpus_per_worker=1, grad_accum=1, batch_size=16, grad_cache_chunk=grad_cache_chunk,
                    max_steps=3, checkpoint_every=3, val_queries=0)
    fit(tiny_config(prepared, tiny_model_dir, out, **{**settings, **overrides}))
    return read_history(out)


def checkpoint_files(result) -> list[str]:
    return sorted(str(p.relative_to(result.checkpoint.path)) for p in Path(result.checkpoint.path).rglob("*")
                  if p.is_file())


@pytest.fixture(scope="module")
def zero2_run(prepared, tiny_model_dir, tmp_path_factory):
    from train.driver import fit

    out = tmp_path_factory.mktemp("zero2")
    return fit(tiny_config(prepared, tiny_model_dir, out)), out


def test_two_worker_zero2_run_with_accumulation_learns_and_checkpoints_both_ranks(zero2_run):
    from train.progress import read_history

    result, out = zero2_run
    history = read_history(out)
    assert history["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    # 2 workers x 8 positives, plus each one's hard negative where it has one: far more than 8 - 1
    assert (history["negatives_per_query"] >= 15).all()
    files = checkpoint_files(result)
    assert "state/zero_pp_rank_0_mp_rank_00_optim_states.pt" in files
    assert "state/zero_pp_rank_1_mp_rank_00_optim_states.pt" in files
    assert {"trainer_state.json", "train_config.json", "tokenizer/tokenizer.json"} <= set(files)
    state = json.loads((Path(result.checkpoint.path) / "trainer_state.json").read_text())
    assert state["step"] == 6


def test_exported_model_loads_in_sentence_transformers_and_firstlight_alike(zero2_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    from model.encoder import TextEncoder
    from train.checkpoints import export_checkpoint

    result, _ = zero2_run
    folder = export_checkpoint(Path(result.checkpoint.path), tmp_path / "model")
    texts = ["cordless drill", "I need a light jacket for a spring outing", "white 30 in. vanity"]
    ours = TextEncoder.load(str(folder), max_length=64).encode(texts)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert json.loads((folder / "firstlight.json").read_text())["step"] == 6


@pytest.mark.parametrize("mixed_precision", ["auto", "weights"])
def test_bf16_on_cpu_learns_and_exports_the_fp32_master_weights(prepared, tiny_model_dir, tmp_path, mixed_precision):
    """bf16 is where CPUs with bf16 instructions train fastest; the export must not be bf16-rounded,
    whether bf16 ran as autocast over fp32 weights (CPU default) or as 16-bit weights + fp32 masters."""
    import torch
    from safetensors.torch import load_file

    from train.driver import run_train
    from train.progress import read_history

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, precision="bf16", zero_stage=1, num_workers=1,
                      cpus_per_worker=1, grad_accum=1, batch_size=16, max_steps=10, checkpoint_every=10,
                      val_queries=0, mixed_precision=mixed_precision)
    folder = Path(run_train(cfg))
    loss = read_history(tmp_path)["loss"]
    assert loss.iloc[-3:].mean() < loss.iloc[:3].mean()  # a batch's loss is noisy; three are not
    weights = load_file(str(folder / "model.safetensors"))
    query = weights["encoder.layer.0.attention.self.query.weight"]
    assert query.dtype == torch.float32
    assert (query != query.bfloat16().float()).any()  # fp32 master weights, not the bf16 copy


def test_worker_failure_is_recovered_from_the_last_checkpoint(prepared, tiny_model_dir, tmp_path):
    from train.driver import fit

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2, fail_at_step=3,
                      max_failures=1, val_queries=0)
    result = fit(cfg)
    assert (tmp_path / ".failed_once").exists()  # the failure did happen
    state = json.loads((Path(result.checkpoint.path) / "trainer_state.json").read_text())
    assert state["step"] == 6
    assert result.error is None
    # the restarted run resumed from step 2's checkpoint, not from scratch
    assert (tmp_path / "resumed_from.txt").read_text().strip() == "2"


def test_early_stopping_export_and_curves_from_one_worker_ddp(prepared, tiny_model_dir, tmp_path):
    """lr 0: validation never improves after the first checkpoint, so patience 1 stops at step 2."""
    from train.driver import run_train

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, strategy="ddp", num_workers=1, cpus_per_worker=1,
                      grad_accum=1, lr=1e-12, checkpoint_every=1, early_stopping_patience=1, max_steps=6)
    model = run_train(cfg)
    history = __import__("pandas").read_csv(tmp_path / "metrics.csv")
    assert history["step"].max() == 2
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((model / "firstlight.json").read_text())["step"] == 1  # best = first checkpoint
    assert (model / "modules.json").exists() and (model / "model.safetensors").exists()


def _zero_shot_index(prepared, model_dir, tmp_path):
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index

    emb = run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=str(tmp_path / "emb"), model=str(model_dir)))
    return run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(tmp_path / "index")))


def test_mined_negatives_are_near_misses_and_never_known_positives(prepared, tiny_model_dir, tmp_path):
    from data_pipeline.prepare import load_catalogue, load_split
    from train.pairs import build_pairs, text_key

    index = _zero_shot_index(prepared, tiny_model_dir, tmp_path)
    judged_only = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, tmp_path))
    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, hard_negatives="both", mine_index_dir=str(index))
    cfg.validate()
    both = build_pairs(prepared, cfg)
    assert len(both) == len(judged_only)
    assert both["has_negative"].sum() > judged_only["has_negative"].sum()
    # no negative has the text of a product judged above negative_at for its query
    text = load_catalogue(prepared).set_index("product_id")["text"]
    train = load_split(prepared, "train")
    relevant = train[train["relevance"] > cfg.negative_at]
    not_negative = set(zip(relevant["query"], text[relevant["product_id"]].to_numpy()))
    negatives = both[both["has_negative"]]
    assert not any((q, n) in not_negative for q, n in zip(negatives["query"], negatives["negative"]))
    # the loss tells false negatives by these keys: equal texts, equal keys
    for column in ("query", "positive", "negative"):
        assert (both[f"{column}_key"] == both[column].map(text_key)).all(), column
    assert both.groupby("query")["query_key"].nunique().max() == 1
    assert both["query_key"].nunique() == both["query"].nunique()


@pytest.mark.parametrize("grad_cache_chunk", [0, 4])
def test_hard_negatives_reach_the_loss_in_both_step_kinds(prepared, tiny_model_dir, tmp_path, grad_cache_chunk):
    def run(hard_negatives, out):
        return three_step_history(prepared, tiny_model_dir, out, grad_cache_chunk, hard_negatives=hard_negatives)

    judged, none = run("judged", tmp_path / "judged"), run("none", tmp_path / "none")
    assert judged["step"].tolist() == none["step"].tolist() == [1, 2, 3]
    # the same batches (same seed): in-batch positives only (15 at batch 16, fewer where a query's other
    # positive is masked), or plus the judged negatives of the batch's rows
    assert (none["negatives_per_query"] <= 15).all()
    assert (judged["negatives_per_query"] > none["negatives_per_query"] + 2).all()


def test_final_model_can_train_on_train_and_val(prepared, tiny_model_dir, tmp_path):
    from data_pipeline.prepare import load_split
    from train.pairs import build_pairs

    train_only = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, tmp_path))
    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, train_splits="train,val", val_queries=0)
    cfg.validate()
    both = build_pairs(prepared, cfg)
    val_queries = set(load_split(prepared, "val")["query"])
    assert not val_queries & set(train_only["query"])
    assert set(both["query"]) - set(train_only["query"]) <= val_queries
    assert len(set(both["query"]) & val_queries) > 0 and len(both) > len(train_only)
    assert not set(load_split(prepared, "test")["query"]) & set(both["query"])  # test stays unseen


def test_resume_from_a_given_checkpoint_continues_its_steps(prepared, tiny_model_dir, tmp_path):
    from train.driver import fit

    first = fit(tiny_config(prepared, tiny_model_dir, tmp_path / "a", num_workers=1, cpus_per_worker=1,
                            grad_accum=1, max_steps=2, checkpoint_every=2, val_queries=0, zero_stage=1))
    resumed = fit(tiny_config(prepared, tiny_model_dir, tmp_path / "b", num_workers=1, cpus_per_worker=1,
                              grad_accum=1, max_steps=4, checkpoint_every=2, val_queries=0, zero_stage=1,
                              resume_from=first.checkpoint.path))
    from train.progress import read_history

    assert (tmp_path / "b" / "resumed_from.txt").read_text().strip() == "2"
    assert read_history(tmp_path / "b")["step"].tolist() == [3, 4]
    assert json.loads((Path(resumed.checkpoint.path) / "trainer_state.json").read_text())["step"] == 4


def test_length_grouped_batches_train_every_planned_step_and_learn(prepared, tiny_model_dir, tmp_path):
    from train.driver import fit
    from train.progress import read_history

    fit(tiny_config(prepared, tiny_model_dir, tmp_path, num_workers=1, cpus_per_worker=1, grad_accum=1,
                    max_steps=8, checkpoint_every=8, val_queries=0, length_window=3))
    history = read_history(tmp_path)
    assert history["step"].tolist()[-1] == 8
    assert history["loss"].iloc[-2:].mean() < history["loss"].iloc[:2].mean()


def test_lora_trains_adapters_only_and_exports_a_merged_plain_model(prepared, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from model.encoder import TextEncoder
    from train.checkpoints import export_checkpoint
    from train.driver import fit
    from train.progress import read_history

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path / "run", num_workers=1, cpus_per_worker=1, grad_accum=1,
                      max_steps=8, checkpoint_every=8, val_queries=0, lora_rank=8, lora_alpha=16, lr=2e-2,
                      dropout=False)  # 8 steps at batch 8: dropout's noise would hide the loss's fall
    result = fit(cfg)
    loss = read_history(tmp_path / "run")["loss"]
    assert loss.iloc[-3:].mean() < loss.iloc[:3].mean()
    folder = export_checkpoint(Path(result.checkpoint.path), tmp_path / "model")
    exported = load_file(folder / "model.safetensors")
    assert not any("lora" in name for name in exported)  # merged: a plain encoder, no peft needed to serve it
    original = load_file(Path(tiny_model_dir) / "model.safetensors")
    changed = [n for n, w in exported.items() if n in original and not np.allclose(w.numpy(), original[n].numpy())]
    # adapters sit on the linear layers only: their weights moved, embeddings and LayerNorms did not
    assert changed and all(n.endswith("dense.weight") or n.endswith(("query.weight", "key.weight", "value.weight"))
                           for n in changed)
    texts = ["cordless drill", "white 30 in. vanity"]
    np.testing.assert_allclose(TextEncoder.load(str(folder)).encode(texts),
                               SentenceTransformer(str(folder), device="cpu").encode(texts), atol=1e-5)


def test_cached_gradient_mode_runs_under_deepspeed_and_sees_the_whole_batch(prepared, tiny_model_dir, tmp_path):
    from train.driver import fit
    from train.progress import read_history

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, grad_accum=1, batch_size=16, grad_cache_chunk=4,
                      max_steps=3, checkpoint_every=3, val_queries=0)
    result = fit(cfg)
    history = read_history(tmp_path)
    assert history["step"].tolist() == [1, 2, 3]
    # 2 workers x 16 positives (+ hard negatives) although the model never sees more than 4 texts at once
    assert (history["negatives_per_query"] >= 2 * 16 - 1).all()
    assert json.loads((Path(result.checkpoint.path) / "trainer_state.json").read_text())["step"] == 3


def test_rerun_into_a_folder_holding_a_run_with_other_settings_is_refused(prepared, zero2_run, tiny_model_dir):
    from common.errors import ConfigError
    from train.driver import fit

    _, out = zero2_run  # 2 workers there
    with pytest.raises(ConfigError, match=r"dist.num_workers=2 there, 1 now.*new --output_dir"):
        fit(tiny_config(prepared, tiny_model_dir, out, num_workers=1, cpus_per_worker=1))


def test_gpu_benchmark_script_runs_its_whole_path_on_cpu(prepared, tiny_model_dir, tmp_path):
    """The GPU benchmark's training, rate and MFU arithmetic, checked where there is no GPU."""
    from benchmarks.report import RESULTS
    from benchmarks.speed import gpu_train

    before = RESULTS.read_text()
    got = gpu_train.main(["--prepared-dir", str(prepared), "--model", str(tiny_model_dir), "--random-init",
                          "--device", "cpu", "--steps", "6", "--warmup-steps", "2", "--batch-size", "8",
                          "--output-dir", str(tmp_path / "run")])
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_model_dir)
    assert got["params"] == sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    assert got["pairs_per_s"] > 0 and got["tokens_per_pair"] > 6  # query + positive + negative: 2+ tokens each
    assert got["mfu"] == pytest.approx(got["pairs_per_s"] * 6 * got["params"] * got["tokens_per_pair"] / 989e12)
    assert f"| {got['pairs_per_s']:,.0f} | {got['tokens_per_pair']:.1f} | {got['params'] / 1e6:.2f} M |" in got["table"]
    assert "random weights" in got["table"] and "ZeRO-0" in got["table"]  # one CPU worker: nothing to shard
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    assert RESULTS.read_text() == before  # a CPU check never writes a GPU figure


@pytest.fixture(scope="module")
def tiny_e5_dir(tmp_path_factory, e5_model_dir):
    """A 2-layer, 32-wide random BERT with multilingual-e5-small's tokenizer and query / passage prompts."""
    import shutil

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_e5")
    tokenizer = AutoTokenizer.from_pretrained(e5_model_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copy(Path(e5_model_dir) / "config_sentence_transformers.json", out)
    return out


def test_a_prompted_multilingual_model_trains_with_its_prompts_and_keeps_them(prepared, tiny_e5_dir, tmp_path):
    import pyarrow as pa
    from transformers import AutoTokenizer

    from model.folders import read_prompts
    from train.checkpoints import export_checkpoint
    from train.driver import fit
    from train.pairs import Tokenize

    tokenize = Tokenize(str(tiny_e5_dir), query_max_length=16, product_max_length=16)
    batch = pa.table({"query": ["春游外套"], "positive": ["轻薄夹克"], "negative": ["羽绒服"], "has_negative": [True],
                      **{f"{c}_key": [1] for c in ("query", "positive", "negative")}})
    out = tokenize(batch)
    tokenizer = AutoTokenizer.from_pretrained(tiny_e5_dir)
    text = lambda column: tokenizer.decode(out[f"{column}_ids"][0], skip_special_tokens=True)  # noqa: E731
    assert text("query") == "query: 春游外套" and text("positive") == "passage: 轻薄夹克"
    cfg = tiny_config(prepared, tiny_e5_dir, tmp_path / "run", num_workers=1, cpus_per_worker=1, grad_accum=1,
                      max_steps=4, checkpoint_every=4, val_queries=10, lora_rank=4, lora_alpha=8)
    result = fit(cfg)
    folder = export_checkpoint(Path(result.checkpoint.path), tmp_path / "model")
    assert read_prompts(folder) == {"query": "query: ", "passage": "passage: "}


