"""One table of every fine-tuning run evaluated on the test split: its settings, validation and test figures.

Reads, under the work folder, each ``train-*`` run (its config from a checkpoint, its exported
model's validation nDCG@10, its training rate) and the test results that
``benchmarks/quality/bench_finetune.py`` (or `firstlight embed/index/evaluate` into ``finetuned-<run>/``)
wrote for it, and writes the section "Fine-tuning ablations" of RESULTS.md. Runs already in the
table whose folders are not on this machine keep their recorded rows. Usage:

    python benchmarks/quality/ablation_table.py [--workdir artifacts/homedepot]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import RESULTS, update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from model.folders import DEFAULT_MODEL, MANIFEST  # noqa: E402
from train.config import MINED_MODES, TrainConfig  # noqa: E402
from train.settings import Distribution  # noqa: E402


def _run_of(folder: str | None, leaf: str = "index") -> str | None:
    """The fine-tuning run whose model built ``folder`` (a FINETUNED-RUN/LEAF folder, as the
    evaluation steps lay them out: LEAF is index or embeddings); None for the zero-shot index and
    any other folder."""
    if not folder or Path(folder).name != leaf or not Path(folder).parent.name.startswith("finetuned-"):
        return None
    return Path(folder).parent.name.removeprefix("finetuned-")


def flat(saved: dict) -> dict:
    """A saved training config with its components' settings under the flat names runs recorded
    before settings had components (``optim.lr`` -> ``lr``), so old and new runs read alike."""
    out = {k: v for k, v in saved.items() if not isinstance(v, dict)}
    for old, new in TrainConfig.RENAMED.items():
        owner, _, name = new.partition(".")
        if isinstance(saved.get(owner), dict) and name in saved[owner]:
            out[old] = saved[owner][name]
    return out


def settings(cfg: dict) -> str:
    """The settings that differ between runs, in words. (Rows of runs trained with options since
    removed keep the words they were recorded with; see "Tried and removed" in RESULTS.md.)"""
    cfg = flat(cfg)
    parts = [f"positives >= {cfg.get('positive_at', 2.5):g}", f"batch {cfg['batch_size']}"]
    start = Path(cfg.get("model", DEFAULT_MODEL)).name  # a folder's name: models/all-mpnet-base-v2
    if start not in (DEFAULT_MODEL, "default"):
        parts.insert(0, f"from {start}")
    if cfg.get("grad_cache_chunk"):
        parts[-1] += " (cached gradients)"
    parts.append(f"{cfg['hard_negatives']} negatives")
    mined_from = _run_of(cfg.get("mine_index_dir"))
    if cfg["hard_negatives"] in MINED_MODES and mined_from:
        parts[-1] += f" (mined from {mined_from}'s index)"
    parts.append(f"lr {cfg['lr']:g}")
    if cfg.get("length_window", 0) > 1:
        parts.append(f"batches grouped by length ({cfg['length_window']} at a time)")
    if cfg.get("epochs", 1) != 1:
        parts.append(f"{cfg['epochs']} epochs")
    if cfg.get("lora_rank"):
        parts.append(f"LoRA r{cfg['lora_rank']}")
    precision = cfg.get("precision", "fp32")
    if precision == "bf16":  # runs from before mixed_precision existed held 16-bit weights
        saved = Distribution(precision="bf16", mixed_precision=cfg.get("mixed_precision", "weights"),
                             use_gpu=cfg.get("use_gpu", "no"))
        precision += " autocast" if saved.autocast else " (16-bit weights)"
    parts.append(precision)
    # runs from before duplicate masking existed have no such key: they trained without it
    parts.append("duplicates masked" if cfg.get("mask_duplicates", False) else "duplicates not masked")
    # runs from before dropout was a setting have no such key: the model stayed in eval mode, dropout off
    if not cfg.get("dropout", False):
        parts.append("no dropout")
    if cfg.get("scale", 20.0) != 20.0:
        parts.append(f"scale {cfg['scale']:g}")
    if cfg.get("symmetric_loss"):
        parts.append("symmetric loss")
    if cfg.get("seed", 2026) != 2026:
        parts.append(f"seed {cfg['seed']}")
    if cfg.get("train_splits", "train") != "train":
        parts.append(f"trained on {cfg['train_splits']}")
    return ", ".join(parts)


def collect(root: Path) -> list[dict]:
    import pandas as pd

    runs = []
    for run in sorted(root.glob("train-*"), key=lambda p: p.stat().st_mtime):
        test = root / f"finetuned-{run.name}" / "test.json"
        configs = sorted(run.glob("run/checkpoint_*/train_config.json"))
        if not (run / "model" / "firstlight.json").exists() or not test.exists() or not configs:
            continue
        cfg = json.loads(configs[-1].read_text())
        model = json.loads((run / "model" / "firstlight.json").read_text())
        last = pd.read_csv(run / "metrics.csv").iloc[-1]
        described = settings(cfg)
        if Path(cfg["prepared_dir"]).resolve() != (root / "data").resolve():
            described += f", pairs from {cfg['prepared_dir']}"
        runs.append({"run": run.name, "settings": described, "steps": int(last["step"]),
                     "pairs_per_s": float(last["pairs_per_s"]), "val": model.get("val_ndcg@10"), **_figures(test)})
    return runs + collect_soups(root) + collect_ensembles(root)


def _collect_built(root: Path, prefix: str, info_name: str, describe) -> list[dict]:
    """Encoders built from runs rather than trained (PREFIX-*/model) and evaluated like a run: no
    training steps of their own; ``describe`` turns the folder's INFO_NAME file into its settings."""
    found = []
    for built in sorted(root.glob(f"{prefix}-*"), key=lambda p: p.stat().st_mtime):
        test = root / f"finetuned-{built.name}" / "test.json"
        info_path = built / "model" / info_name
        if not test.exists() or not info_path.exists():
            continue
        found.append({"run": built.name, "steps": None, "pairs_per_s": None, "val": None,
                      "settings": describe(json.loads(info_path.read_text())), **_figures(test)})
    return found


def collect_soups(root: Path) -> list[dict]:
    """`firstlight soup` outputs (soup-*/model)."""
    def describe(info: dict) -> str:
        parts = info.get("soup_of", [])
        return f"mean of the weights of {len(parts)} runs: " + ", ".join(Path(m).parent.name for m in parts)

    return _collect_built(root, "soup", "firstlight.json", describe)


def collect_ensembles(root: Path) -> list[dict]:
    """`firstlight ensemble` outputs (ensemble-*/model)."""
    def describe(info: dict) -> str:
        members = info["members"]
        return (f"ensemble of {len(members)} encoders (their weighted vectors, concatenated): "
                + ", ".join(f"{Path(m['source']).parent.name} ({m['weight']:g})" for m in members))

    return _collect_built(root, "ensemble", MANIFEST, describe)


def _figures(test: Path) -> dict:
    """A model's test figures: alone (as typed and spelling-corrected), RRF, and the tuned wsum if run."""
    def mean(name: str, system: str) -> dict | None:
        path = test.parent / name
        return json.loads(path.read_text())["systems"][system]["mean"] if path.exists() else None

    return {"alone": mean("test.json", "dense"), "spelled": mean("test_spelled.json", "dense"),
            "rrf": mean("test.json", "fusion"), "wsum": mean("test_wsum.json", "fusion")}


def merge(recorded: list[dict], found: list[dict]) -> list[dict]:
    """The table's rows: every recorded run, its row refreshed where its artifacts are here, then the
    runs found here for the first time; soups after runs, ensembles last.

    Artifacts live on whichever machine trained them and are often gone (a fresh checkout, a cleaned
    disk): a run that is not here keeps its recorded row instead of vanishing from the table.
    """
    fresh = {r["run"]: r for r in found}
    rows = [fresh.pop(r["run"], r) for r in recorded] + list(fresh.values())
    # a stable sort: order kept otherwise
    return sorted(rows, key=lambda r: 2 if r["run"].startswith("ensemble-") else r["run"].startswith("soup-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    args = parser.parse_args()
    found = collect(Path(args.workdir))
    if not found:
        sys.exit(f"no evaluated training runs under {args.workdir}")
    raw = RESULTS.parent / "results" / "finetune_ablations.json"  # what update_section last wrote
    runs = merge(json.loads(raw.read_text())["runs"] if raw.exists() else [], found)

    def fmt(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    def spelled(r):
        return "-" if r["spelled"] is None else f"{r['spelled']['ndcg@10']:.3f} / {r['spelled']['recall@100']:.4f}"

    rows = [f"| {r['run']} | {r['settings']} | {r['steps'] or '-'} | {fmt(r['pairs_per_s'], 1)} | {fmt(r['val'])} | "
            f"{fmt(r['alone']['ndcg@10'])} | {fmt(r['alone']['recall@100'])} | {fmt(r['alone']['mrr@10'])} | "
            f"{spelled(r)} | "
            f"{fmt(r['rrf']['ndcg@10'])} | {fmt(r['rrf']['recall@100'])} | "
            f"{fmt(r['wsum'] and r['wsum']['ndcg@10'])} | {fmt(r['wsum'] and r['wsum']['recall@100'])} |"
            for r in runs]
    body = f"""
Every fine-tuning run evaluated on the test split (835 unseen queries, all 54,667
products), oldest first; each starts from all-MiniLM-L6-v2 unless its settings name another encoder
("from ..."). Validation nDCG@10 is the exported checkpoint's, on 200 val queries and a
5,000-product sample; pairs/s is the training rate on these 2 cores (other work sometimes shared
them). "Corrected" is the encoder alone on spelling-corrected queries (`--spell-correct`; nDCG@10 /
Recall@100). Fusions are with BM25, on the queries as typed: reciprocal rank (RRF, k 60) and a
weighted sum tuned on val (wsum). Soups (`firstlight soup`) come last: one encoder whose weights are
the mean of the runs named; they have no training steps of their own. Ensembles (`firstlight
ensemble`) come after them: several encoders served as one, scoring the weighted mean of their
cosines; each costs its members' time together.
Targets: alone nDCG@10 >= 0.40 and Recall@100 >= 0.83; fused >= 0.42 / 0.85.

| run | settings | steps | pairs/s | val nDCG@10 | nDCG@10 | Recall@100 | MRR@10 | corrected | RRF nDCG@10 | RRF Recall@100 | wsum nDCG@10 | wsum Recall@100 |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    update_section("finetune_ablations", "Fine-tuning ablations", "python benchmarks/quality/ablation_table.py", body,
                   raw={"runs": runs})


if __name__ == "__main__":
    main()
