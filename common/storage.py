"""A storage root that is a cloud URI (s3://, gs://, ... anything pyarrow's filesystems open, as Ray's).

FirstLight's stages work on local folders. When the storage root is a URI, each stage runs on a local
mirror of the folders it needs (``pull``: fetched only when the remote manifest differs from the
mirror's) and its output folders are uploaded when the stage succeeds (``push``). An artifact folder
is complete when its ``manifest.json`` is there: ``push`` removes the old copy, uploads every other
file, and the manifest last, so a crash mid-upload leaves a folder without a manifest, which every
stage treats as missing and rebuilds. Credentials come from the environment, as for Ray and pyarrow
(AWS_* variables or instance roles for S3, GOOGLE_APPLICATION_CREDENTIALS for GCS, AWS_ENDPOINT_URL
for S3-compatible stores).

The mirror lives under $FIRSTLIGHT_MIRROR_DIR (default ~/.cache/firstlight/mirror), one folder per
URI. On a multi-node cluster it exists on the node that runs the stage only, so Ray Data reads a
mirrored folder from its URI (``data_path``) and writes into one through this node
(``write_parquet``): every node needs the storage credentials, as Ray itself does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from common.errors import ConfigError, FirstLightError

log = logging.getLogger(__name__)

MIRROR_ENV = "FIRSTLIGHT_MIRROR_DIR"
MANIFEST = "manifest.json"


def is_uri(path) -> bool:
    """True for a cloud URI (``s3://b/x``); False for local paths and ``file://`` / ``local://`` ones."""
    scheme = urlparse(str(path)).scheme
    return "://" in str(path) and len(scheme) > 1 and scheme not in ("file", "local")


def join(root: str, *parts: str) -> str:
    """``root`` / parts for a URI or a local path (pathlib would fold a URI's ``//``)."""
    if not is_uri(root):
        return str(Path(root, *parts))
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts)])


def parent(path: str) -> str:
    """The folder holding ``path``, for a URI or a local path."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_uri(path) else str(Path(path).parent)


def output_not_derived(name: str):
    """The error for a cloud input whose output folder was left to be derived."""
    return ConfigError(name, "with cloud storage the output location is not derived from the inputs",
                       f"pass --{name.replace('_', '-')} (a URI under the same storage root)")


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(str(uri))
    except Exception as err:  # an unknown scheme, missing credentials, a bad bucket name
        raise FirstLightError(f"cannot open storage {uri}: {err}. Use a local folder or a URI that pyarrow "
                              "opens (s3://bucket/path, gs://bucket/path) with credentials in the environment")


def mirror_root() -> Path:
    env = os.environ.get(MIRROR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "firstlight" / "mirror"


def mirror_of(uri: str) -> Path:
    """The local folder that mirrors ``uri`` (scheme/bucket/path under the mirror root)."""
    parsed = urlparse(str(uri))
    return mirror_root() / parsed.scheme / parsed.netloc / parsed.path.strip("/")


def is_mirrored(path) -> bool:
    try:
        Path(path).resolve().relative_to(mirror_root().resolve())
        return True
    except ValueError:
        return False


def uri_of(folder) -> str | None:
    """The URI a mirror folder was fetched from (None for a folder outside the mirror)."""
    if not is_mirrored(folder):
        return None
    scheme, netloc, *rest = Path(folder).resolve().relative_to(mirror_root().resolve()).parts
    return f"{scheme}://{netloc}/" + "/".join(rest)


def data_path(folder) -> str:
    """The path Ray Data reads ``folder`` from: a mirror exists on this node only, so read its URI."""
    return uri_of(folder) or str(folder)


def write_parquet(dataset, folder: Path) -> None:
    """Write a Ray Dataset as Parquet into ``folder``. A mirror folder is on this node only, so its
    blocks are streamed here and written one file each (any node may run Ray Data's own writers)."""
    import pyarrow.parquet as pq

    if not is_mirrored(folder):
        dataset.write_parquet(str(folder))
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, block in enumerate(dataset.iter_batches(batch_size=None, batch_format="pyarrow")):
        if block.num_rows:
            pq.write_table(block, folder / f"part-{i:05d}.parquet")


def _signature(fs, path: str, marker: str | None) -> dict | None:
    """What identifies a remote folder's contents: its files and sizes, and the marker file's bytes.
    None when the marker (the file written last) is missing: the folder is absent or incomplete."""
    import hashlib

    import pyarrow.fs as pafs

    path = path.rstrip("/")
    if marker and fs.get_file_info(f"{path}/{marker}").type != pafs.FileType.File:
        return None
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    # lists, not tuples: the record saved as JSON beside a mirror must compare equal
    files = sorted([i.path[len(path) + 1:], i.size] for i in infos if i.type == pafs.FileType.File)
    digest = ""
    if marker:
        with fs.open_input_stream(f"{path}/{marker}") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    return {"files": files, "marker": digest}


PULLED = ".firstlight-source.json"


def _is_current(folder: Path, signature: dict | None) -> bool:
    """True when ``folder`` is a mirror of the remote contents ``signature`` describes."""
    record = folder / PULLED
    return signature is not None and record.exists() and json.loads(record.read_text()) == signature


def pull(uri: str, marker: str | None = MANIFEST, required: bool = True) -> Path:
    """Mirror the folder at ``uri`` locally (skipped when the mirror is current); return its path.

    ``marker`` is the file written last (``manifest.json`` for artifacts, ``config.json`` for model
    folders): without it the folder is incomplete or absent, an error when ``required``; otherwise
    the (empty) mirror path is returned so that a stage can build the folder there."""
    import pyarrow.fs as pafs

    local = mirror_of(uri)
    fs, path = filesystem(uri)
    remote = _signature(fs, path, marker)
    if remote is None:
        if required:
            raise FirstLightError(f"{uri} holds no complete folder (no {marker or 'files'}): run the stage that "
                                  "writes it first, or check the URI")
        shutil.rmtree(local, ignore_errors=True)
        return local
    if _is_current(local, remote):
        return local
    scratch = local.with_name(f".{local.name}.pull{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    log.info("[storage] fetching %s -> %s", uri, local)
    pafs.copy_files(path.rstrip("/"), str(scratch), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    (scratch / PULLED).write_text(json.dumps(remote))
    shutil.rmtree(local, ignore_errors=True)
    try:
        os.replace(scratch, local)
    except OSError:  # another process on this node (a second replica) fetched it at the same time
        shutil.rmtree(scratch, ignore_errors=True)
        if not _is_current(local, remote):
            raise
    return local


def local_folder(path: str) -> Path:
    """A local folder as it is; a cloud folder's local mirror, fetched first (see :func:`pull`)."""
    return pull(path) if is_uri(path) else Path(path)


def push(folder: Path, uri: str, marker: str = MANIFEST) -> None:
    """Upload a finished local folder to ``uri``: the old copy removed first, ``marker`` uploaded last."""
    import pyarrow.fs as pafs

    folder = Path(folder)
    if not (folder / marker).exists():
        raise ValueError(f"{folder} has no {marker}: only finished folders are uploaded")
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    local_fs = pafs.LocalFileSystem()
    log.info("[storage] uploading %s -> %s", folder, uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir_contents(path)  # marker gone first: readers see "incomplete", never a mix
    fs.create_dir(path, recursive=True)
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and f.name != PULLED]
    for item in sorted(files, key=lambda f: f.relative_to(folder).as_posix() == marker):
        pafs.copy_files(str(item), f"{path}/{item.relative_to(folder).as_posix()}", source_filesystem=local_fs,
                        destination_filesystem=fs)
    # what was uploaded is what the mirror holds: a later pull of this URI needs no download
    (folder / PULLED).write_text(json.dumps(_signature(fs, path, marker)))


def pull_file(uri: str) -> Path:
    """Mirror one file if it exists remotely (else remove a stale mirror copy); its local path."""
    import pyarrow.fs as pafs

    local = mirror_of(uri)
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    else:
        local.unlink(missing_ok=True)
    return local


def push_file(local: Path, uri: str) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def exists(path: str) -> bool:
    """A file or folder, local or in a bucket (a bucket's folder exists when objects are under it)."""
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type in (pafs.FileType.File, pafs.FileType.Directory)


def read_text(path: str) -> str:
    """A text file's contents, local or in a bucket."""
    if not is_uri(path):
        return Path(path).read_text()
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as fh:
        return fh.read().decode()


def list_dir(uri: str, prefix: str = "") -> list[str]:
    """URIs of the entries of a remote folder whose names start with ``prefix``, sorted."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.base_name.startswith(prefix))
    return [join(uri, n) for n in names]


def run_on_mirrors(run, cfg, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
                   output_files: tuple[str, ...] = ()):
    """Run a stage whose config names cloud URIs on local mirrors, then upload what it wrote.

    ``inputs``: artifact folders to fetch first; ``outputs``: folders the stage writes (fetched too,
    so an up-to-date one is reused, and uploaded after it succeeds); ``output_files``: single files it
    writes. Returns what ``run`` returns, with a mirror path turned back into its URI."""
    from dataclasses import replace

    values = {name: getattr(cfg, name) for name in (*inputs, *outputs, *output_files)}
    uris = {name: v for name, v in values.items() if v and is_uri(v)}
    for name in (*outputs, *output_files):
        if uris and not values[name]:
            raise output_not_derived(name)
    local = {}
    for name in inputs:
        if name in uris:
            local[name] = str(pull(uris[name]))
    for name in outputs:
        if name in uris:
            local[name] = str(pull(uris[name], required=False))
    for name in output_files:
        if name in uris:
            local[name] = str(pull_file(uris[name]))
    result = run(replace(cfg, **local))
    for name in outputs:  # a stage that rebuilt its folder replaced the mirror, and the record with it
        folder = Path(local.get(name, ""))
        if name in uris and (folder / MANIFEST).exists() and not _is_current(folder, _signature(
                *filesystem(uris[name]), MANIFEST)):
            push(folder, uris[name])
    for name in output_files:
        if name in uris and Path(local[name]).exists():
            push_file(Path(local[name]), uris[name])
    by_local = {str(Path(v)): uris[k] for k, v in local.items()}
    return by_local.get(str(result), result) if isinstance(result, (str, Path)) else result


def uses_uri(cfg, names: tuple[str, ...]) -> bool:
    return any(is_uri(getattr(cfg, n) or "") for n in names)
