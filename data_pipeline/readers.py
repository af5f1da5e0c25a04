"""Readers that turn a shop's files into two Ray Datasets with one schema.

- catalogue: ``product_id`` (str), ``title`` (str), ``text`` (str: normalised title + description +
  attributes, what the encoder and BM25 read), then one typed column per attribute field
  (data_pipeline/attributes.py: price, brand, in_stock, tags ...) for filters and facets
- judgments: ``query`` (str, normalised), ``product_id`` (str), ``relevance`` (float, 1 = irrelevant,
  2 = partly relevant, 3 = exact match)

Every file is first checked in the driver (:mod:`data_pipeline.files`); rows that cannot be used are
skipped and counted where skipping is right (an empty title, a judgment for a product the catalogue
does not have) and rejected with a :class:`~firstlight.errors.DataError` where it is not (a missing
column, duplicate product ids, a relevance that is not a number on the 1-3 scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import DataError
from common.text import normalize_text, product_text
from data_pipeline.attributes import (
    ARROW_TYPES,
    AttributeField,
    FieldReport,
    parse_fields,
    resolve,
    typed_columns,
)
from data_pipeline.brands import derive_brands
from data_pipeline.files import TableFile, ray_read, read_columns

log = logging.getLogger(__name__)

MIN_RELEVANCE, MAX_RELEVANCE = 1.0, 3.0
CATALOGUE_SCHEMA = pa.schema([("product_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
JUDGMENT_SCHEMA = pa.schema([("query", pa.string()), ("product_id", pa.string()), ("relevance", pa.float64())])


@dataclass(frozen=True)
class CatalogueSpec:
    """Where a catalogue is and which of its columns mean what."""

    path: str
    id_column: str = "product_id"
    title_column: str = "title"
    description_column: str | None = None
    #: columns appended to the product text as "column: value"
    attribute_columns: tuple[str, ...] = ()
    #: one column of packed "key:value|key:value" attributes (WANDS's product_features)
    packed_attributes_column: str | None = None
    #: columns kept as typed fields for filters and facets (data_pipeline/attributes.py)
    attributes: tuple[AttributeField, ...] = ()
    #: add a keyword field "brand" read off the titles (data_pipeline/brands.py), for titles-only catalogues
    brand_from_title: bool = False
    format: str = "auto"
    delimiter: str | None = None
    encoding: str = "utf-8"

    def __post_init__(self):
        object.__setattr__(self, "attributes", parse_fields(self.attributes))

    @property
    def file(self) -> TableFile:
        return TableFile(Path(self.path), self.format, self.delimiter, self.encoding)

    @property
    def columns(self) -> list[str]:
        cols = [self.id_column, self.title_column, self.description_column, *self.attribute_columns,
                self.packed_attributes_column, *(f.source for f in self.attributes)]
        return list(dict.fromkeys(c for c in cols if c))


@dataclass(frozen=True)
class JudgmentSpec:
    """Where labelled (query, product, relevance) rows are and which columns mean what."""

    path: str
    query_column: str = "query"
    id_column: str = "product_id"
    relevance_column: str = "relevance"
    #: text labels to relevance, e.g. {"Exact": 3, "Partial": 2, "Irrelevant": 1}
    label_map: dict | None = None
    #: when the judgments name queries by id (WANDS), the file holding id -> query text
    queries_path: str | None = None
    queries_id_column: str = "query_id"
    queries_text_column: str = "query"
    format: str = "auto"
    delimiter: str | None = None
    encoding: str = "utf-8"

    @property
    def file(self) -> TableFile:
        return TableFile(Path(self.path), self.format, self.delimiter, self.encoding)

    @property
    def columns(self) -> list[str]:
        return [self.query_column, self.id_column, self.relevance_column]


@dataclass
class LoadReport:
    """What a reader kept and skipped, printed by `prepare` and stored in its manifest."""

    rows: int = 0
    kept: int = 0
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def skip(self, reason: str, count: int, examples: list | None = None, source: str = "") -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(count)
            shown = f" (e.g. {', '.join(map(str, examples[:3]))})" if examples else ""
            log.warning("%s: skipped %d row(s): %s%s", source, count, reason, shown)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, "skipped": self.skipped, "notes": self.notes}


@dataclass
class LoadedData:
    """A catalogue and its judgments as Ray Datasets, plus what reading them found."""

    name: str
    catalogue: object  # ray.data.Dataset
    judgments: object  # ray.data.Dataset
    catalogue_report: LoadReport
    judgments_report: LoadReport
    input_files: list[Path]
    attributes: tuple[AttributeField, ...] = ()  # typed fields, types resolved
    attribute_reports: list[FieldReport] = field(default_factory=list)


@dataclass(frozen=True)
class CatalogueFields:
    """The catalogue's typed fields with their types fixed (declared or inferred once, in the driver,
    over the whole file), and the brands read off titles (by product id) when asked for."""

    fields: tuple[AttributeField, ...] = ()
    brands: dict | None = None

    @property
    def all(self) -> tuple[AttributeField, ...]:
        return self.fields + ((AttributeField("brand", "keyword"),) if self.brands is not None else ())

    def schema(self) -> pa.Schema:
        return pa.schema(list(CATALOGUE_SCHEMA) + [(f.name, ARROW_TYPES[f.type]) for f in self.all])


# ---------------------------------------------------------------------------------------------
# Row transformations: pure functions over Arrow tables, used by the driver check and by Ray alike.
# ---------------------------------------------------------------------------------------------
def _normalised(column: pa.ChunkedArray | pa.Array) -> list[str]:
    return [normalize_text(v) for v in column.to_pylist()]


def _packed_attributes(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (value or "").split("|"):
        key, sep, val = item.partition(":")
        if sep:
            pairs.append((key, val))
    return pairs


def catalogue_rows(table: pa.Table, spec: CatalogueSpec, fields: CatalogueFields = CatalogueFields()) -> pa.Table:
    """Map a raw batch to the catalogue schema (with ``fields``' typed columns); rows with an empty id
    or title are dropped."""
    ids = [v.strip() for v in table[spec.id_column].to_pylist()]
    titles = _normalised(table[spec.title_column])
    descriptions = table[spec.description_column].to_pylist() if spec.description_column else None
    attrs = {c: table[c].to_pylist() for c in spec.attribute_columns}
    packed = table[spec.packed_attributes_column].to_pylist() if spec.packed_attributes_column else None
    out = {"product_id": [], "title": [], "text": []}
    kept = []
    for i, (pid, title) in enumerate(zip(ids, titles)):
        if not pid or not title:
            continue
        pairs = [(c.replace("_", " "), attrs[c][i]) for c in spec.attribute_columns]
        if packed is not None:
            pairs += _packed_attributes(packed[i])
        kept.append(i)
        out["product_id"].append(pid)
        out["title"].append(title)
        out["text"].append(product_text(title, descriptions[i] if descriptions else None, pairs))
    raw = {f.source: [table[f.source][i].as_py() for i in kept] for f in fields.fields}
    out.update(typed_columns(fields.fields, raw))
    if fields.brands is not None:
        out["brand"] = pa.array([fields.brands.get(pid) for pid in out["product_id"]], type=pa.string())
    return pa.table(out, schema=fields.schema())


def _relevance_values(raw: list[str], label_map: dict | None) -> np.ndarray:
    """Parse relevance strings (or mapped labels); NaN marks a value that is not a number."""
    values = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        v = (v or "").strip()
        if label_map is not None and v in label_map:
            values[i] = float(label_map[v])
            continue
        try:
            values[i] = float(v)
        except ValueError:
            pass
    return values


def judgment_rows(table: pa.Table, spec: JudgmentSpec, known_ids: frozenset, query_text: dict | None) -> pa.Table:
    """Map a raw batch to the judgments schema; rows for unknown products or empty queries dropped."""
    raw_queries = table[spec.query_column].to_pylist()
    if query_text is not None:
        raw_queries = [query_text.get((q or "").strip(), "") for q in raw_queries]
    queries = [normalize_text(q) for q in raw_queries]
    ids = [v.strip() for v in table[spec.id_column].to_pylist()]
    rel = _relevance_values(table[spec.relevance_column].to_pylist(), spec.label_map)
    keep = [bool(q) and pid in known_ids for q, pid in zip(queries, ids)]
    return pa.table({
        "query": [q for q, k in zip(queries, keep) if k],
        "product_id": [p for p, k in zip(ids, keep) if k],
        "relevance": rel[np.array(keep, dtype=bool)] if len(keep) else np.array([], dtype=float),
    }, schema=JUDGMENT_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Driver-side checks
# ---------------------------------------------------------------------------------------------
def check_catalogue(spec: CatalogueSpec) -> tuple[frozenset, LoadReport]:
    """Check a catalogue file; return the ids that will be kept and a report. Raises DataError."""
    tf = spec.file
    table = read_columns(tf, [spec.id_column, spec.title_column], "catalogue")
    report = LoadReport(rows=table.num_rows)
    ids = [v.strip() for v in table[spec.id_column].to_pylist()]
    titles = _normalised(table[spec.title_column])
    empty_id = [i for i, v in enumerate(ids) if not v]
    empty_title = [i for i, (p, t) in enumerate(zip(ids, titles)) if p and not t]
    report.skip(f"empty '{spec.id_column}'", len(empty_id), [tf.row_label(i) for i in empty_id], str(tf.path))
    report.skip(f"empty '{spec.title_column}'", len(empty_title), [tf.row_label(i) for i in empty_title],
                str(tf.path))
    kept_ids = [p for p, t in zip(ids, titles) if p and t]
    counts = pc.value_counts(pa.array(kept_ids))
    dup_ids = [d["values"] for d in counts.to_pylist() if d["counts"] > 1]
    if dup_ids:
        first = dup_ids[0]
        rows = [tf.row_label(i) for i, p in enumerate(ids) if p == first][:3]
        raise DataError(
            tf.path, f"{len(dup_ids)} product id(s) appear more than once in column '{spec.id_column}', "
                     f"e.g. '{first}' at {' and '.join(rows)}",
            "make product ids unique (merge or drop the duplicate rows)", where=f"column '{spec.id_column}'")
    if not kept_ids:
        raise DataError(tf.path, "no product has both an id and a title",
                        f"fill the '{spec.id_column}' and '{spec.title_column}' columns")
    report.kept = len(kept_ids)
    return frozenset(kept_ids), report


def load_query_text(spec: JudgmentSpec) -> dict | None:
    """For judgments that name queries by id: the id -> text map from the queries file."""
    if not spec.queries_path:
        return None
    tf = TableFile(Path(spec.queries_path), spec.format, spec.delimiter, spec.encoding)
    table = read_columns(tf, [spec.queries_id_column, spec.queries_text_column], "queries")
    return {str(k).strip(): v for k, v in zip(table[spec.queries_id_column].to_pylist(),
                                               table[spec.queries_text_column].to_pylist())}


def check_judgments(spec: JudgmentSpec, known_ids: frozenset, query_text: dict | None,
                    max_unknown_fraction: float = 0.5) -> LoadReport:
    """Check a judgments file against the catalogue's ids. Raises DataError; counts skips."""
    tf = spec.file
    table = read_columns(tf, spec.columns, "judgments")
    report = LoadReport(rows=table.num_rows)
    raw_rel = table[spec.relevance_column].to_pylist()
    rel = _relevance_values(raw_rel, spec.label_map)
    bad = np.flatnonzero(np.isnan(rel) | (rel < MIN_RELEVANCE) | (rel > MAX_RELEVANCE))
    if len(bad):
        i = int(bad[0])
        fix = (f"use numbers from {MIN_RELEVANCE:g} (irrelevant) to {MAX_RELEVANCE:g} (exact match)"
               + (f" or one of the labels {sorted(spec.label_map)}" if spec.label_map else
                  ", or map text labels with label_map"))
        raise DataError(tf.path, f"relevance {raw_rel[i]!r} in column '{spec.relevance_column}' is not a number "
                                 f"on FirstLight's {MIN_RELEVANCE:g}-{MAX_RELEVANCE:g} scale "
                                 f"({len(bad)} such row(s))", fix, where=tf.row_label(i))
    raw_q = table[spec.query_column].to_pylist()
    if query_text is not None:
        unknown_q = [i for i, q in enumerate(raw_q) if (q or "").strip() not in query_text]
        report.skip(f"query id not in {Path(spec.queries_path).name}", len(unknown_q),
                    [tf.row_label(i) for i in unknown_q], str(tf.path))
        raw_q = [query_text.get((q or "").strip(), "") for q in raw_q]
    queries = [normalize_text(q) for q in raw_q]
    ids = [v.strip() for v in table[spec.id_column].to_pylist()]
    empty_q = [i for i, q in enumerate(queries) if not q and (query_text is None or raw_q[i])]
    report.skip(f"empty '{spec.query_column}'", len(empty_q), [tf.row_label(i) for i in empty_q], str(tf.path))
    unknown = [i for i, (q, p) in enumerate(zip(queries, ids)) if q and p not in known_ids]
    report.skip("product id not in the catalogue", len(unknown),
                [f"{tf.row_label(i)}: '{ids[i]}'" for i in unknown], str(tf.path))
    if len(unknown) > max_unknown_fraction * len(ids):
        raise DataError(
            tf.path, f"{len(unknown)} of {len(ids)} judgments name products that are not in the catalogue "
                     f"(e.g. '{ids[unknown[0]]}' at {tf.row_label(unknown[0])})",
            f"check that column '{spec.id_column}' holds the same ids as the catalogue's id column",
            where=f"column '{spec.id_column}'")
    keep = [bool(q) and p in known_ids for q, p in zip(queries, ids)]
    pairs = [(q, p) for (q, p), k in zip(zip(queries, ids), keep) if k]
    dup_pairs = len(pairs) - len(set(pairs))
    if dup_pairs:
        report.notes.append(f"{dup_pairs} repeated (query, product) pairs; evaluation averages their relevance")
    report.kept = sum(keep)
    if report.kept == 0:
        raise DataError(tf.path, "no usable judgment remains after the checks",
                        "see the skipped-row warnings above")
    return report


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
def catalogue_fields(spec: CatalogueSpec) -> tuple[CatalogueFields, list[FieldReport]]:
    """The typed fields' types, inferred over the whole file where not declared (a Ray batch sees only
    part of it), and the brands read off titles when the spec asks; with a report per field."""
    if not spec.attributes and not spec.brand_from_title:
        return CatalogueFields(), []
    sources = list(dict.fromkeys(f.source for f in spec.attributes))
    table = read_columns(spec.file, list(dict.fromkeys([spec.id_column, spec.title_column, *sources])), "catalogue")
    fields, reports = resolve(spec.attributes, {c: table[c].to_pylist() for c in sources})
    brands = None
    if spec.brand_from_title:
        ids = [v.strip() for v in table[spec.id_column].to_pylist()]
        derived = derive_brands(_normalised(table[spec.title_column]))
        brands = {pid: b for pid, b in zip(ids, derived) if b}
        reports.append(FieldReport("brand", "keyword", False, len(brands), len(ids), 0, [], len(set(brands.values()))))
    for r in reports:
        log.info("[prepare] attribute %s", r.line())
    return CatalogueFields(fields, brands), reports


def read_catalogue(spec: CatalogueSpec, fields: CatalogueFields = CatalogueFields()):
    """Check, then read a catalogue as a Ray Dataset. Returns (dataset, kept ids, report)."""
    known_ids, report = check_catalogue(spec)
    ds = ray_read(spec.file, spec.columns).map_batches(
        catalogue_rows, fn_kwargs={"spec": spec, "fields": fields}, batch_format="pyarrow")
    return ds, known_ids, report


def read_judgments(spec: JudgmentSpec, known_ids: frozenset, max_unknown_fraction: float = 0.5):
    """Check, then read judgments as a Ray Dataset. Returns (dataset, report)."""
    query_text = load_query_text(spec)
    report = check_judgments(spec, known_ids, query_text, max_unknown_fraction)
    ds = ray_read(spec.file, spec.columns).map_batches(
        judgment_rows, fn_kwargs={"spec": spec, "known_ids": known_ids, "query_text": query_text},
        batch_format="pyarrow")
    return ds, report


def read_judgments_frame(spec: JudgmentSpec, known_ids: frozenset, max_unknown_fraction: float = 0.5):
    """Check, then read a (small) judgments file into pandas without Ray: query, product_id, relevance
    (a held-out set scored by `firstlight evaluate --judgments`)."""
    query_text = load_query_text(spec)
    check_judgments(spec, known_ids, query_text, max_unknown_fraction)
    table = read_columns(spec.file, spec.columns, "judgments")
    return judgment_rows(table, spec, known_ids, query_text).to_pandas()


def read_dataset(name: str, catalogue: CatalogueSpec, judgments: JudgmentSpec,
                 max_unknown_fraction: float = 0.5) -> LoadedData:
    fields, field_reports = catalogue_fields(catalogue)
    cat_ds, known_ids, cat_report = read_catalogue(catalogue, fields)
    judg_ds, judg_report = read_judgments(judgments, known_ids, max_unknown_fraction)
    inputs = [Path(catalogue.path), Path(judgments.path)] + ([Path(judgments.queries_path)]
                                                             if judgments.queries_path else [])
    return LoadedData(name, cat_ds, judg_ds, cat_report, judg_report, inputs, fields.all, field_reports)


def homedepot_specs(data_dir: str | Path) -> tuple[CatalogueSpec, JudgmentSpec]:
    """The Home Depot product-search set: products.csv (titles) and judgments.csv (1-3 relevance)."""
    d = Path(data_dir)
    return (CatalogueSpec(str(d / "products.csv"), id_column="product_uid", title_column="product_title",
                          brand_from_title=True),
            JudgmentSpec(str(d / "judgments.csv"), query_column="search_term", id_column="product_uid",
                         relevance_column="relevance"))


#: The Chinese demo catalogue, shipped with FirstLight (its README says how it was made).
ZH_DEMO_DIR = Path(__file__).resolve().parent / "datasets" / "zh-demo"


def zh_demo_specs(data_dir: str | Path | None = None) -> tuple[CatalogueSpec, JudgmentSpec]:
    """The Chinese demo: products.csv (title, category path, price in yuan, brand, stock, season tags,
    colour) and judgments.csv (graded 1-3). The category is also product text, as it always was."""
    d = Path(data_dir) if data_dir else ZH_DEMO_DIR
    return (CatalogueSpec(str(d / "products.csv"), attribute_columns=("category",),
                          attributes=("category:keyword", "price:number", "brand:keyword", "in_stock:boolean",
                                      "season:keywords", "colour:keyword")),
            JudgmentSpec(str(d / "judgments.csv")))


#: WANDS labels on FirstLight's relevance scale.
WANDS_LABELS = {"Exact": 3.0, "Partial": 2.0, "Irrelevant": 1.0}


def wands_specs(data_dir: str | Path) -> tuple[CatalogueSpec, JudgmentSpec]:
    """Wayfair's WANDS: tab-separated product.csv, query.csv and label.csv."""
    d = Path(data_dir)
    return (CatalogueSpec(str(d / "product.csv"), id_column="product_id", title_column="product_name",
                          description_column="product_description",
                          attribute_columns=("product_class",), packed_attributes_column="product_features",
                          attributes=("category=product_class:keyword", "rating=average_rating:number",
                                      "reviews=review_count:number"), format="tsv"),
            JudgmentSpec(str(d / "label.csv"), query_column="query_id", id_column="product_id",
                         relevance_column="label", label_map=WANDS_LABELS, queries_path=str(d / "query.csv"),
                         queries_id_column="query_id", queries_text_column="query", format="tsv"))
