"""The GPU check script (benchmarks/speed/gpu_check.py), run whole on the CPU: every step it will run on a
GPU machine runs here at small sizes, writes its section into a scratch results file, and leaves
benchmarks/RESULTS.md alone."""

import json

import pytest

from benchmarks.report import RESULTS
from benchmarks.speed import gpu_check

pytestmark = pytest.mark.training  # a slow kind: the quick tier (-m 'not slow') leaves these out


def test_gpu_check_runs_every_step_on_cpu(ray_session, small_homedepot, tiny_model_dir, tmp_path, monkeypatch):
    scratch = tmp_path / "RESULTS.md"
    monkeypatch.setenv("FIRSTLIGHT_RESULTS", str(scratch))
    before = RESULTS.read_text()
    got = gpu_check.main(["--device", "cpu", "--workdir", str(tmp_path / "work"), "--data-dir", str(small_homedepot),
                          "--model", str(tiny_model_dir)])
    assert list(got["timings"]) == ["train", "scale", "embedding", "serve"]
    assert got["train"]["pairs_per_s"] > 0 and got["train"]["mfu"] > 0
    flat, ivf = got["scale"]
    assert flat["kind"] == "flat" and flat["recall@100"] == 1.0 and flat["qps"] > 0
    assert ivf["kind"] == "ivf" and 0.3 < ivf["recall@100"] <= 1.0 and ivf["n"] == flat["n"]
    assert got["embedding"]["titles_per_s"] > 0 and got["embedding"]["ratio"] > 0
    served = got["serve"]["firstlight"]["default"]
    assert [r["clients"] for r in served] == [1, 8, 32] and all(r["errors"] == 0 and r["qps"] > 0 for r in served)
    text = scratch.read_text()
    for section in ("index_scale", "embedding", "serve"):
        assert f"<!-- {section}:start -->" in text, section
        assert json.loads((tmp_path / "results" / f"{section}.json").read_text())
    assert RESULTS.read_text() == before  # a dry run never writes a figure


def test_a_benchmark_missing_the_bench_extra_says_how_to_install_it():
    import pytest

    from benchmarks.report import need_bench_extra

    with pytest.raises(SystemExit, match=r"FIRSTLIGHT_EXTRA=cpu,bench bash scripts/setup.sh"):
        need_bench_extra("no_such_bench_package")
    assert need_bench_extra("json") is json
