"""Checks on raw table files before Ray reads them, so bad input fails with a message, not a traceback.

Ray Data reads files in parallel tasks; an error there surfaces as a long traceback from inside Ray.
These checks run once in the driver over only the columns that matter and raise
:class:`~firstlight.errors.DataError` naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from common.errors import DataError

FORMATS = ("csv", "tsv", "parquet", "jsonl")


@dataclass(frozen=True)
class TableFile:
    """One table on disk: CSV/TSV (any delimiter), Parquet or JSON Lines."""

    path: Path
    format: str = "auto"
    delimiter: str | None = None
    encoding: str = "utf-8"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        fmt = self.format
        if fmt == "auto":
            suffix = self.path.suffix.lower().lstrip(".")
            fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet", "txt": "csv"}.get(suffix, suffix)
            if fmt not in FORMATS:
                raise DataError(self.path, f"cannot tell the format from the suffix '.{suffix}'",
                                f"name the format explicitly (one of {', '.join(FORMATS)})")
        if fmt not in FORMATS:
            raise DataError(self.path, f"unknown format '{fmt}'", f"use one of {', '.join(FORMATS)}")
        object.__setattr__(self, "format", fmt)
        if self.delimiter is None:
            object.__setattr__(self, "delimiter", "\t" if fmt == "tsv" else ",")

    @property
    def is_text(self) -> bool:
        return self.format in ("csv", "tsv", "jsonl")

    def row_label(self, index: int) -> str:
        """Human row name for 0-based data row ``index`` (CSV lines count the header)."""
        if self.format in ("csv", "tsv"):
            return f"row {index + 1} (line {index + 2})"
        if self.format == "jsonl":
            return f"line {index + 1}"
        return f"row {index + 1}"

    # -- options shared by the driver checks and Ray Data's parallel read ------------------------
    def csv_options(self, columns: list[str]):
        read = pacsv.ReadOptions(encoding=self.encoding, block_size=1 << 22)
        parse = pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)
        convert = pacsv.ConvertOptions(include_columns=columns,
                                       column_types={c: pa.string() for c in columns},
                                       strings_can_be_null=False)
        return read, parse, convert


def check_exists_and_nonempty(tf: TableFile, role: str) -> None:
    if not tf.path.exists():
        raise DataError(tf.path, f"the {role} file does not exist", "check the path, or pass the right one")
    if tf.path.is_dir():
        raise DataError(tf.path, f"the {role} path is a folder, not a file", "point at the file itself")
    if tf.path.stat().st_size == 0:
        raise DataError(tf.path, f"the {role} file is empty", f"supply a {role} file with a header line and rows")


def _check_encoding(tf: TableFile) -> None:
    """Decode line by line so the error can name the line and byte of the first bad character."""
    if tf.encoding.replace("-", "").lower() not in ("utf8", "utf8sig"):
        return  # another encoding was named on purpose; pyarrow decodes it
    with open(tf.path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    tf.path, f"bytes that are not valid UTF-8 ({raw[err.start:err.start + 4]!r})",
                    "re-encode the file as UTF-8 (for example: iconv -f latin1 -t utf-8 IN > OUT), "
                    "or set its encoding (encoding='latin-1') if it is consistently in another one",
                    where=f"line {line_no}, byte {err.start + 1}") from None


def _header(tf: TableFile) -> list[str]:
    if tf.format == "parquet":
        try:
            return pq.read_schema(tf.path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(tf.path, f"not a readable Parquet file ({err})", "write it again as Parquet") from None
    if tf.format == "jsonl":
        return []  # JSON Lines has no header; columns are checked after reading
    with open(tf.path, encoding=tf.encoding, errors="replace", newline="") as fh:
        first = fh.readline().lstrip("\ufeff").rstrip("\r\n")
    if not first.strip():
        raise DataError(tf.path, "the first line is blank, expected a header of column names",
                        "put the column names on the first line", where="line 1")
    return next(csv.reader([first], delimiter=tf.delimiter))


def read_columns(tf: TableFile, columns: list[str], role: str) -> pa.Table:
    """Read ``columns`` of a table as strings after checking the file; the driver-side check.

    Raises DataError for a missing or empty file, non-UTF-8 bytes, a missing column, a malformed
    row, or a table with a header and no rows.
    """
    check_exists_and_nonempty(tf, role)
    if tf.is_text:
        _check_encoding(tf)
    header = _header(tf)
    if tf.format != "jsonl":
        _require_columns(tf, header, columns, role)
    try:
        if tf.format in ("csv", "tsv"):
            table = pacsv.read_csv(tf.path, *tf.csv_options(columns))
        elif tf.format == "parquet":
            table = pq.read_table(tf.path, columns=columns)
        else:
            table = pajson.read_json(tf.path)
            _require_columns(tf, table.column_names, columns, role)
            table = table.select(columns)
    except pa.ArrowInvalid as err:
        raise DataError(tf.path, f"the {role} file could not be parsed: {err}",
                        "fix the malformed row it names (quotes, delimiters or column count)") from None
    if table.num_rows == 0:
        raise DataError(tf.path, f"the {role} file has a header but no rows", f"add {role} rows")
    return table.cast(pa.schema([(c, pa.string()) for c in columns]))


def _require_columns(tf: TableFile, found: list[str], needed: list[str], role: str) -> None:
    missing = [c for c in needed if c not in found]
    if missing:
        raise DataError(
            tf.path, f"the {role} file has no column {', '.join(repr(m) for m in missing)} "
                     f"(columns found: {', '.join(repr(f) for f in found) or 'none'})",
            "rename the column in the file, or map it in the config "
            "(for example --title_column NAME / --product_id_column NAME)",
            where="header")


def ray_read(tf: TableFile, columns: list[str]):
    """Read ``columns`` of the (already checked) file as a Ray Dataset of strings."""
    import ray.data

    if tf.format in ("csv", "tsv"):
        read, parse, convert = tf.csv_options(columns)
        return ray.data.read_csv(str(tf.path), read_options=read, parse_options=parse,
                                 convert_options=convert)
    if tf.format == "parquet":
        ds = ray.data.read_parquet(str(tf.path), columns=columns)
    else:
        ds = ray.data.read_json(str(tf.path), lines=True)
    schema = pa.schema([(c, pa.string()) for c in columns])
    return ds.map_batches(lambda t: t.select(columns).cast(schema), batch_format="pyarrow")
