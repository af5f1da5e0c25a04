"""The prepare stage: read a catalogue and its judgments, split by query, write Parquet + manifest.

Output folder::

    catalogue/              product_id, title, text, typed attribute columns   (Parquet)
    judgments/{train,val,test}/  query, product_id, relevance (Parquet)
    manifest.json           inputs (sha256), seed, fractions, counts, per-split query fingerprints,
                            attributes: [{name, type}] (the schema filters and facets check against)

A folder whose manifest matches the same inputs and settings is reused as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from common import storage
from common.config import Listed, check_choice, check_range, listed
from common.errors import ConfigError, FirstLightError
from common.manifest import (
    atomic_folder,
    describe_inputs,
    read_manifest,
    up_to_date,
    write_json,
)
from common.paths import HOMEDEPOT_ENV, default_homedepot_dir, default_workdir
from data_pipeline.attributes import parse_fields
from data_pipeline.download import download_wands, wands_present
from data_pipeline.files import TableFile, check_exists_and_nonempty
from data_pipeline.readers import (
    JUDGMENT_SCHEMA,
    CatalogueSpec,
    JudgmentSpec,
    homedepot_specs,
    read_dataset,
    wands_specs,
    zh_demo_specs,
)
from data_pipeline.split import SPLITS, assign_splits, only_split, query_set_sha256

log = logging.getLogger(__name__)

DATASETS = ("homedepot", "wands", "zh-demo", "files")


@dataclass
class PrepareConfig:
    dataset: str = field(default="homedepot", metadata={
        "help": "homedepot, wands (downloaded when absent and the network allows), zh-demo (the Chinese "
                "demo catalogue shipped with FirstLight) or files (your own)"})
    data_dir: str | None = field(default=None, metadata={
        "help": f"folder of the dataset's files; homedepot defaults to ${HOMEDEPOT_ENV} or ../shared/data/homedepot"})
    output_dir: str | None = field(default=None, metadata={"help": "where to write; default WORKDIR/<dataset>/data"})
    seed: int = field(default=2026, metadata={"help": "split seed; a query's split depends only on it and the query"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of queries held out for validation"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of queries held out for testing"})
    max_unknown_fraction: float = field(default=0.5, metadata={
        "help": "judgments naming unknown products are skipped; above this share it is an error"})
    # --dataset files: your own catalogue and judgments, with a column mapping
    catalogue: str | None = field(default=None, metadata={"help": "catalogue file (CSV/TSV/Parquet/JSONL)"})
    judgments: str | None = field(default=None, metadata={"help": "judgments file (CSV/TSV/Parquet/JSONL)"})
    product_id_column: str = field(default="product_id", metadata={"help": "catalogue + judgments id column"})
    title_column: str = field(default="title", metadata={"help": "catalogue title column"})
    description_column: str | None = field(default=None, metadata={"help": "catalogue description column"})
    attribute_columns: Listed = field(default=(), metadata={"help": "catalogue columns added as 'name: value'"})
    attributes: Listed = field(default=(), metadata={
        "help": "catalogue columns kept as typed fields for filters and facets: NAME, NAME:TYPE or "
                "NAME=COLUMN:TYPE with TYPE number, keyword, boolean or keywords ('|'-separated); "
                "a type left out is inferred from the values and reported"})
    brand_from_title: bool = field(default=False, metadata={
        "help": "add a keyword field 'brand' read off the titles' first words (for titles-only catalogues)"})
    judgments_product_id_column: str | None = field(default=None, metadata={
        "help": "judgments id column when it differs from --product_id_column"})
    query_column: str = field(default="query", metadata={"help": "judgments query/user-text column"})
    relevance_column: str = field(default="relevance", metadata={"help": "judgments relevance column (1-3)"})

    def __post_init__(self):
        self.attribute_columns = listed(self.attribute_columns)
        self.attributes = listed(self.attributes)

    def validate(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("val_fraction", self.val_fraction, 0.0, 0.5)
        check_range("test_fraction", self.test_fraction, 0.0, 0.5, low_inclusive=False)
        check_range("max_unknown_fraction", self.max_unknown_fraction, 0.0, 1.0)
        fields = parse_fields(self.attributes)
        if self.brand_from_title and any(f.name == "brand" for f in fields):
            raise ConfigError("brand_from_title", "a field 'brand' is declared in attributes too",
                              "drop one: either read brand from a column or from the titles")
        if self.dataset == "files" and not (self.catalogue and self.judgments):
            raise ConfigError("catalogue", "--dataset files needs both a catalogue and a judgments file",
                              "pass --catalogue PATH --judgments PATH")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else default_workdir() / self.dataset / "data"

    def specs(self) -> tuple[CatalogueSpec, JudgmentSpec]:
        if self.dataset == "homedepot":
            folder = Path(self.data_dir) if self.data_dir else default_homedepot_dir()
            if not (folder / "products.csv").exists():
                raise FirstLightError(
                    f"the Home Depot data is not in {folder} (products.csv, judgments.csv). Fix: pass "
                    f"--data_dir FOLDER or set {HOMEDEPOT_ENV}, or use --dataset wands")
            return homedepot_specs(folder)
        if self.dataset == "wands":
            folder = Path(self.data_dir) if self.data_dir else default_workdir() / "downloads" / "wands"
            if not wands_present(folder):
                download_wands(folder)
            return wands_specs(folder)
        if self.dataset == "zh-demo":
            return zh_demo_specs(self.data_dir)
        return (CatalogueSpec(self.catalogue, id_column=self.product_id_column, title_column=self.title_column,
                              description_column=self.description_column,
                              attribute_columns=tuple(self.attribute_columns), attributes=tuple(self.attributes),
                              brand_from_title=self.brand_from_title),
                JudgmentSpec(self.judgments, query_column=self.query_column,
                             id_column=self.judgments_product_id_column or self.product_id_column,
                             relevance_column=self.relevance_column))


def run_prepare(cfg: PrepareConfig) -> Path:
    """Run the prepare stage; return the output folder (reused when already up to date)."""
    if storage.uses_uri(cfg, ("output_dir",)):
        return storage.run_on_mirrors(run_prepare, cfg, outputs=("output_dir",))
    cfg.validate()
    out = cfg.resolved_output_dir()
    catalogue_spec, judgment_spec = cfg.specs()
    inputs = [catalogue_spec.path, judgment_spec.path] + ([judgment_spec.queries_path]
                                                          if judgment_spec.queries_path else [])
    for path, role in zip(inputs, ("catalogue", "judgments", "queries")):
        check_exists_and_nonempty(TableFile(Path(path), format="csv"), role)
    key = {"inputs": describe_inputs(inputs), "seed": cfg.seed, "val_fraction": cfg.val_fraction,
           "test_fraction": cfg.test_fraction, "catalogue": asdict(catalogue_spec), "judgments": asdict(judgment_spec)}
    if up_to_date(out, key):
        log.info("[prepare] %s is up to date with its inputs; reusing it", out)
        return out

    start = time.perf_counter()
    log.info("[prepare] reading %s", ", ".join(inputs))
    data = read_dataset(cfg.dataset, catalogue_spec, judgment_spec, cfg.max_unknown_fraction)
    with atomic_folder(out) as tmp:
        log.info("[prepare] writing the catalogue (%d products)", data.catalogue_report.kept)
        storage.write_parquet(data.catalogue, tmp / "catalogue")
        judged = data.judgments.map_batches(
            assign_splits, fn_kwargs={"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                                      "test_fraction": cfg.test_fraction},
            batch_format="pyarrow").materialize()
        for split in SPLITS:
            log.info("[prepare] writing the %s split", split)
            folder = tmp / "judgments" / split
            storage.write_parquet(judged.map_batches(only_split, fn_kwargs={"split": split},
                                                     batch_format="pyarrow"), folder)
            if not folder.exists():  # Ray writes no file for an empty split; readers still need one
                folder.mkdir(parents=True)
                pq.write_table(JUDGMENT_SCHEMA.empty_table(), folder / "empty.parquet")
                log.warning("[prepare] the %s split is empty: too few queries for its fraction", split)
        counts = _count(tmp)
        write_json(tmp / "manifest.json", {
            "stage": "prepare", "dataset": cfg.dataset, "inputs_key": key, "counts": counts,
            "attributes": [f.as_dict() for f in data.attributes],
            "reports": {"catalogue": data.catalogue_report.as_dict(),
                        "judgments": data.judgments_report.as_dict(),
                        "attributes": [r.as_dict() for r in data.attribute_reports]},
            "seconds": round(time.perf_counter() - start, 1)})
    log.info("[prepare] done in %.1fs: %s", time.perf_counter() - start, _summary(counts))
    return out


def _count(folder: Path) -> dict:
    counts = {"products": pq.read_table(folder / "catalogue", columns=["product_id"]).num_rows}
    for split in SPLITS:
        queries = pq.read_table(folder / "judgments" / split, columns=["query"])["query"].to_pylist()
        counts[split] = {"queries": len(set(queries)), "judgments": len(queries),
                         "query_set_sha256": query_set_sha256(queries)}
    return counts


def _summary(counts: dict) -> str:
    parts = [f"{counts['products']:,} products"]
    parts += [f"{s} {counts[s]['queries']:,} queries / {counts[s]['judgments']:,} judgments" for s in SPLITS]
    return "; ".join(parts)


def load_split(prepared: Path, split: str):
    """A split's judgments as a pandas DataFrame (query, product_id, relevance)."""
    return pq.read_table(Path(prepared) / "judgments" / split).to_pandas()


def load_catalogue(prepared: Path, columns: list[str] | None = None):
    return pq.read_table(Path(prepared) / "catalogue", columns=columns).to_pandas()


def catalogue_schema(prepared: Path) -> dict[str, str]:
    """The prepared catalogue's typed fields, {name: type} (empty for one prepared without any)."""
    return {f["name"]: f["type"] for f in (read_manifest(Path(prepared)) or {}).get("attributes", [])}


def prepared_manifest(prepared: Path) -> dict:
    manifest = read_manifest(prepared)
    if manifest is None:
        raise FirstLightError(f"{prepared} holds no prepared data (no manifest.json). "
                              f"Fix: run `firstlight prepare` first, or point --prepared-dir at its output")
    return manifest
