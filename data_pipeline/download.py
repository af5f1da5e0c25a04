"""Fetch the public WANDS set (Wayfair, MIT licence) when no local data is at hand."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import FirstLightError
from common.manifest import atomic_folder

log = logging.getLogger(__name__)

WANDS_BASE_URL = "https://raw.githubusercontent.com/wayfair/WANDS/main/dataset/"
WANDS_FILES = ("product.csv", "query.csv", "label.csv")


def wands_present(folder: Path) -> bool:
    return all((Path(folder) / name).is_file() for name in WANDS_FILES)


def download_wands(folder: Path, base_url: str = WANDS_BASE_URL, timeout: float = 30.0) -> Path:
    """Download WANDS into ``folder`` (all three files or none). Raises FirstLightError offline."""
    folder = Path(folder)
    if wands_present(folder):
        return folder
    log.info("downloading WANDS from %s into %s", base_url, folder)
    try:
        with atomic_folder(folder) as scratch:
            for name in WANDS_FILES:
                _fetch(base_url + name, scratch / name, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise FirstLightError(
            f"could not download WANDS from {base_url} ({err}). Fix: put the Home Depot set "
            f"(products.csv, judgments.csv) where --data_dir or FIRSTLIGHT_HOMEDEPOT_DIR points, or place "
            f"WANDS's {', '.join(WANDS_FILES)} in {folder}") from None
    return folder


def _fetch(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done, next_report = 0, 0.0
        while block := resp.read(1 << 20):
            out.write(block)
            done += len(block)
            if total and done / total >= next_report:
                log.info("  %s: %.0f%% of %.1f MB", dest.name, 100 * done / total, total / 1e6)
                next_report += 0.25
