"""FirstLight on a real multi-node Ray cluster on this machine, used the way a cluster is used:
`ray start --head` + a second `ray start --address` node, work sent with `ray job submit`, token
authentication on. The cluster is stopped at the end, also when a test fails."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firstlight.cli import parse_command

pytestmark = [pytest.mark.cluster, pytest.mark.training]  # a slow kind: the quick tier (-m 'not slow') leaves these out

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground; its own process group lets us stop exactly this
    # node (never `ray stop`, which would stop every Ray on the machine, the test session's included).
    # Several Ray nodes share this machine: every agent port is chosen here so none collides.
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port",
                                                    "node-manager-port", "object-manager-port")]
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args, *ports], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (2 CPUs) and a worker node (1 CPU, its own temp dir), token authentication on."""
    root = Path(f"/tmp/fl-cluster-{os.getpid()}")  # Ray's socket paths must stay short
    root.mkdir(exist_ok=True)
    token = root / "token"
    token.write_text(os.urandom(16).hex())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    nodes = [start_node(["--head", f"--port={gcs}", "--num-cpus=2", "--resources={\"head_node\": 1}",
                         "--include-dashboard=true", f"--dashboard-port={dashboard}", f"--temp-dir={root}/head"],
                        env, root / "head.log")]
    try:
        address = f"http://127.0.0.1:{dashboard}"
        wait_for_nodes(address, env, 1, root)
        nodes.append(start_node([f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--resources={\"second_node\": 1}",
                                 f"--temp-dir={root}/worker"], env, root / "worker.log"))
        wait_for_nodes(address, env, 2, root)
        yield address, env, root
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(root, ignore_errors=True)


def wait_for_nodes(address: str, env: dict, count: int, root: Path, timeout_s: float = 120) -> None:
    start = time.time()
    while time.time() - start < timeout_s:
        out = subprocess.run([RAY, "list", "nodes", "--address", address, "--format", "json"], env=env,
                             capture_output=True, text=True)
        try:
            if out.returncode == 0 and sum(n["state"] == "ALIVE" for n in json.loads(out.stdout)) >= count:
                return
        except json.JSONDecodeError:  # the dashboard is still starting
            pass
        time.sleep(2)
    logs = "\n".join((root / f).read_text()[-2000:] for f in ("head.log", "worker.log") if (root / f).exists())
    pytest.fail(f"{count} Ray node(s) not up after {timeout_s}s:\n{logs}")


def submit(address: str, env: dict, command: list[str], timeout_s: float = 900) -> str:
    """`ray job submit --working-dir .` from the repository root; waits and returns the job's logs."""
    for _ in range(30):  # the head's job agent comes up a little after the dashboard
        ready = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if ready.returncode == 0:
            break
        time.sleep(2)
    proc = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", ".", "--", *command],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0 and "succeeded" in proc.stdout.lower(), proc.stdout[-4000:] + proc.stderr[-3000:]
    return proc.stdout


def test_job_submit_without_the_token_is_refused(cluster):
    address, env, _ = cluster
    bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.run([RAY, "job", "list", "--address", address], env=bare, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "auth" in (proc.stdout + proc.stderr).lower()


def test_whole_pipeline_as_one_ray_job(cluster, small_homedepot, tiny_model_dir):
    address, env, root = cluster
    storage = root / "artifacts"
    recipe = root / "recipe.yaml"  # the demo trains by a recipe file, as a shop's job would
    recipe.write_text("optim: {max_steps: 3, batch_size: 8}\ndist: {cpus_per_worker: 0.5}\nhard_negatives: judged\n")
    logs = submit(address, env, [
        "firstlight", "demo", "--dataset", "homedepot", "--data_dir", str(small_homedepot), "--workdir", str(storage),
        "--model", str(tiny_model_dir), "--runtime.product_max_length", "32", "--finetune", "true",
        "--train_recipe", str(recipe)])
    work = storage / "homedepot"
    for folder in ("data", "embeddings", "index", "train/model", "finetuned/embeddings", "finetuned/index"):
        assert (work / folder / ("manifest.json" if folder != "train/model" else "firstlight.json")).exists(), folder
    tuned = json.loads((work / "eval" / "test_finetuned.json").read_text())
    assert tuned["model"] == str(work / "train" / "model") and tuned["queries"] > 10
    assert json.loads((work / "train" / "model" / "firstlight.json").read_text())["step"] == 3
    assert "| zero-shot fusion |" in logs and "| fine-tuned fusion |" in logs  # the demo's closing table
    # the README's fine-tuned serve command, as written, on the layout the job wrote (no --prepared_dir)
    cfg = parse_command(readme_finetuned_serve(storage))[1]
    cfg.validate()
    assert cfg.resolved_prepared_dir() == str(work / "data") and cfg.absolute().model == str(work / "train" / "model")


def readme_finetuned_serve(storage: Path) -> list[str]:
    """`firstlight serve --index_dir ...` plus the flags the README says to add for the fine-tuned
    model, with ``artifacts/`` pointing at ``storage``."""
    readme = (REPO / "README.md").read_text().replace("\n", " ")
    base = re.search(r"firstlight serve (--index_dir artifacts/homedepot/index)", readme).group(1)
    added = re.search(r"`firstlight demo --finetune true`, add `([^`]+)`", readme).group(1)
    flags = dict(zip(*[iter(shlex.split(base + " " + added))] * 2))  # the later --index_dir wins, as on a CLI
    return ["serve"] + [w.replace("artifacts/", f"{storage}/") for pair in flags.items() for w in pair]


def test_training_with_one_worker_on_each_node(cluster, small_homedepot, tiny_model_dir):
    address, env, root = cluster
    out = root / "two-node"
    prepared = root / "artifacts" / "homedepot" / "data"
    if not prepared.exists():
        submit(address, env, ["firstlight", "prepare", "--dataset", "homedepot", "--data_dir", str(small_homedepot),
                              "--output_dir", str(prepared)])
    submit(address, env, [
        "firstlight", "train", "--prepared_dir", str(prepared), "--output_dir", str(out), "--model", str(tiny_model_dir),
        "--dist.num_workers", "2", "--dist.cpus_per_worker", "0.5", "--dist.placement_strategy", "STRICT_SPREAD", "--optim.max_steps", "2",
        "--optim.batch_size", "8", "--hard_negatives", "judged", "--dist.zero_stage", "2", "--checkpoints.val_queries", "0"])
    checkpoints = sorted(p for p in (out / "run").glob("checkpoint_*") if p.is_dir())
    assert checkpoints, "no checkpoint written"
    shards = {p.name for p in (checkpoints[-1] / "state").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= shards
    nodes = json.loads((out / "worker_nodes.json").read_text())
    assert len(set(nodes)) == 2  # STRICT_SPREAD put the two workers on the two nodes
