"""`firstlight loop`: one round of learning from the shop's own traffic, as one Ray job.

    events -> train -> index -> offline gate -> canary -> promote or roll back

1. **events**: the server's event log as it stands, copied into the round (complete lines only), so
   every later step, and a resumed run, sees the same data;
2. **train**: `firstlight train --events` on that copy, warm-started from the model the server
   serves (the default recipe, or ``--train_recipe``); no judgments file is read;
3. **index**: the catalogue embedded with the new model and indexed;
4. **gate**: the new version against the serving one on the held-out queries' clicks (the queries
   training left out, train/event_pairs.py), each ranked as the server ranks (the hybrid first
   stage). Short of ``gate_min_gain``: the round stops here and nothing is served;
5. **canary**: the new version served to ``canary_share`` of sessions (POST /v1/admin/canary);
6. **decision**: once the canary has shown ``min_impressions`` lists, its clicks per list against
   the control's, from the event log: promoted when the one-sided 95% lower bound of the difference
   clears ``-margin``, rolled back otherwise (and after ``max_wait_s`` without enough lists).

Each step writes its output atomically with a manifest; a crashed or stopped round resumes at the
first step without one (``OUTPUT/current.json`` names the unfinished round).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from common.config import check_range, load_config
from common.errors import ConfigError, FirstLightError
from common.manifest import atomic_folder, read_manifest, write_json
from data_pipeline.embed import Actors, EmbedConfig, run_embed
from data_pipeline.events import EVENTS, IMPRESSIONS, arm_counts
from data_pipeline.index import IndexConfig, run_index
from evaluation.evaluate import EvalConfig, run_evaluate
from train.config import TrainConfig
from train.driver import run_train
from train.pairs import event_pairs

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    server: str = field(default="http://127.0.0.1:8000", metadata={"help": "the serving endpoint"})
    events: str | None = field(default=None, metadata={"help": "the server's event log (SERVE_STATE/events)"})
    prepared_dir: str | None = field(default=None, metadata={"help": "the catalogue the server serves (output of prepare)"})
    output_dir: str | None = field(default=None, metadata={"help": "rounds go here; default EVENTS/../loop"})
    admin_token_env: str = field(default="FIRSTLIGHT_ADMIN_TOKEN", metadata={
        "help": "environment variable holding the server's admin token"})
    admin_token_file: str | None = field(default=None, metadata={"help": "or a file holding it"})
    train_recipe: str | None = field(default=None, metadata={
        "help": "training settings file (train/recipe.yaml's format); default: the default recipe"})
    actors: Actors = field(default_factory=Actors)  # the embedding actor pool, as `firstlight embed` takes it
    gate_min_gain: float = field(default=0.0, metadata={
        "help": "held-out-click nDCG@10 the new version must gain over the serving one to be tried as a canary"})
    canary_share: float = field(default=0.1, metadata={"help": "share of sessions the canary serves"})
    min_impressions: int = field(default=2000, metadata={"help": "canary lists shown before deciding"})
    margin: float = field(default=0.0, metadata={
        "help": "clicks per list the canary may trail the control by and still be promoted (one-sided 95%)"})
    poll_s: float = field(default=30.0, metadata={"help": "how often the canary's figures are read"})
    max_wait_s: float = field(default=7 * 86400.0, metadata={"help": "roll back if the canary has not shown enough lists by then"})

    def validate(self) -> None:
        if not self.events or not (Path(self.events) / IMPRESSIONS).is_dir():
            raise ConfigError("events", f"{self.events} holds no event log (no impressions/ folder)",
                              "pass the serving state's events folder (SERVE_STATE/events)")
        if not self.prepared_dir or not (Path(self.prepared_dir) / "catalogue").is_dir():
            raise ConfigError("prepared_dir", f"{self.prepared_dir} holds no prepared catalogue",
                              "pass the output of `firstlight prepare` the server serves")
        check_range("canary_share", self.canary_share, 0.0, 0.5, low_inclusive=False)
        check_range("min_impressions", self.min_impressions, 1)
        check_range("margin", self.margin, 0.0)
        check_range("poll_s", self.poll_s, 0.0)
        self.actors.validate()
        if not self.token():
            raise ConfigError("admin_token_env", f"no admin token: ${self.admin_token_env} is unset",
                              "export the server's admin token, or pass --admin_token_file")

    def token(self) -> str | None:
        if self.admin_token_file:
            return Path(self.admin_token_file).read_text().strip() or None
        return os.environ.get(self.admin_token_env) or None

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.events).resolve().parent / "loop"


class Server:
    """The admin calls the loop makes."""

    def __init__(self, cfg: LoopConfig):
        self.url, self.headers = cfg.server.rstrip("/"), {"Authorization": f"Bearer {cfg.token()}"}

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            reply = requests.request(method, self.url + path, json=body, headers=self.headers, timeout=600)
        except requests.RequestException as err:
            raise FirstLightError(f"the server at {self.url} did not answer ({err}). Fix: start it, or pass --server")
        if not reply.ok:
            raise FirstLightError(f"{method} {path} answered {reply.status_code}: {reply.text[:300]}")
        return reply.json()


def run_loop(cfg: LoopConfig) -> dict:
    cfg.validate()
    out = cfg.resolved_output_dir()
    server = Server(cfg)
    round_dir = _current_round(out)
    log.info("[loop] round %s", round_dir)
    state = server.call("GET", "/v1/admin/canary")
    serving = state["control"]
    snapshot = _step(round_dir / "events", lambda folder: _snapshot(Path(cfg.events), folder))
    model = _train(cfg, round_dir, snapshot, serving["model"])
    embeddings = run_embed(EmbedConfig(prepared_dir=cfg.prepared_dir, output_dir=str(round_dir / "embeddings"),
                                       model=str(model), actors=cfg.actors))
    index = run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=str(round_dir / "index")))
    gate = _gate(cfg, round_dir, snapshot, serving, index)
    if not gate["passed"]:
        return _finish(out, round_dir, {"outcome": "stopped at the gate", "gate": gate})
    canary = _canary(server, cfg, round_dir, index, model)
    decision = _decide(server, cfg, round_dir, canary)
    return _finish(out, round_dir, {"outcome": decision["outcome"], "gate": gate, "decision": decision})


def _current_round(out: Path) -> Path:
    current = out / "current.json"
    if current.exists():
        name = json.loads(current.read_text())["round"]
        log.info("[loop] resuming the unfinished round %s", name)
    else:
        name = "round-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        write_json(current, {"round": name})
    return out / name


def _finish(out: Path, round_dir: Path, result: dict) -> dict:
    write_json(round_dir / "result.json", result)
    (out / "current.json").unlink(missing_ok=True)
    log.info("[loop] %s: %s", round_dir.name, result["outcome"])
    return result


def _step(folder: Path, build) -> Path:
    """``build(scratch)`` once: its folder is complete when its manifest is there."""
    if read_manifest(folder) is not None:
        return folder
    with atomic_folder(folder) as scratch:
        manifest = build(scratch)
        write_json(scratch / "manifest.json", manifest)
    return folder


def _snapshot(log_dir: Path, folder: Path) -> dict:
    """The log's complete lines as they stand (a writer may be mid-line in its newest file)."""
    counts = {}
    for stream in (IMPRESSIONS, EVENTS):
        lines = 0
        for path in sorted((log_dir / stream).glob("date=*/*.jsonl")):
            data = path.read_bytes()
            data = data[: data.rfind(b"\n") + 1]
            target = folder / stream / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            lines += data.count(b"\n")
        counts[stream] = lines
    if not counts[IMPRESSIONS]:
        raise FirstLightError(f"the event log {log_dir} holds no impressions yet: serve traffic first")
    return {"source": str(log_dir), "taken": time.time(), "records": counts}


def _train(cfg: LoopConfig, round_dir: Path, snapshot: Path, serving_model: str) -> Path:
    model = round_dir / "train" / "model"
    if (model / "firstlight.json").exists():
        return model
    settings = load_config(TrainConfig, cfg.train_recipe) if cfg.train_recipe else TrainConfig()
    return Path(run_train(replace(settings, prepared_dir=cfg.prepared_dir, output_dir=str(round_dir / "train"),
                                  events=str(snapshot), model=serving_model)))


def _gate(cfg: LoopConfig, round_dir: Path, snapshot: Path, serving: dict, index: Path) -> dict:
    """Serving version vs new, hybrid first stage, on the held-out queries' clicks."""
    path = round_dir / "gate.json"
    if path.exists():
        return json.loads(path.read_text())
    _, val, summary = event_pairs(cfg.prepared_dir, TrainConfig(prepared_dir=cfg.prepared_dir, events=str(snapshot)))
    if val.empty:
        raise FirstLightError("no held-out query has a click yet: log more traffic before a round")
    clicks = round_dir / "held_out_clicks.csv"
    val.to_csv(clicks, index=False)
    scores = {}
    for name, index_dir, model in (("serving", serving["index"], serving["model"]), ("new", str(index), None)):
        result = run_evaluate(EvalConfig(prepared_dir=cfg.prepared_dir, index_dir=index_dir, model=model,
                                         judgments=str(clicks), systems=("fusion",),
                                         output=str(round_dir / f"gate-{name}.json")), show_table=False)
        scores[name] = result["systems"]["fusion"]["mean"]["ndcg@10"]
    gain = scores["new"] - scores["serving"]
    gate = {"serving_ndcg@10": scores["serving"], "new_ndcg@10": scores["new"], "gain": gain,
            "held_out_queries": summary["val_queries"], "passed": gain >= cfg.gate_min_gain}
    write_json(path, gate)
    log.info("[loop] gate: held-out clicks nDCG@10 %.4f serving, %.4f new (%+.4f): %s", scores["serving"],
             scores["new"], gain, "passed" if gate["passed"] else "stopped")
    return gate


def _canary(server: Server, cfg: LoopConfig, round_dir: Path, index: Path, model: Path) -> dict:
    path = round_dir / "canary.json"
    if path.exists():
        return json.loads(path.read_text())
    state = server.call("GET", "/v1/admin/canary")
    if state["canary"] is not None and state["canary"]["version"]["index"] != str(index):
        raise FirstLightError("another canary is running on the server: promote or roll it back first")
    if state["canary"] is None:
        state = server.call("POST", "/v1/admin/canary", {"index_dir": str(index), "model": str(model),
                                                          "share": cfg.canary_share})
    canary = {"version": state["canary"]["version"], "started": state["canary"]["started"]}
    write_json(path, canary)
    return canary


def _decide(server: Server, cfg: LoopConfig, round_dir: Path, canary: dict) -> dict:
    path = round_dir / "decision.json"
    if path.exists():
        return json.loads(path.read_text())
    deadline = canary["started"] + cfg.max_wait_s
    while True:
        arms = arm_counts(cfg.events, canary["started"])
        shown = arms.get("canary", {}).get("lists", 0)
        if shown >= cfg.min_impressions or time.time() > deadline:
            break
        log.info("[loop] canary: %d of %d lists shown", shown, cfg.min_impressions)
        time.sleep(cfg.poll_s)
    decision = judge(arms, cfg.min_impressions, cfg.margin)
    live = server.call("GET", "/v1/admin/canary")["canary"]
    if live is not None and live["version"]["index"] == canary["version"]["index"]:
        server.call("POST", "/v1/admin/canary/" + ("promote" if decision["outcome"] == "promoted" else "rollback"))
    write_json(path, decision)
    return decision


def judge(arms: dict, min_impressions: int, margin: float) -> dict:
    """Promote when the canary's clicks per list, less the control's, has a one-sided 95% lower bound
    above ``-margin``; else roll back."""
    canary, control = arms.get("canary"), arms.get("control")
    if not canary or not control or canary["lists"] < min_impressions:
        return {"outcome": "rolled back", "reason": "too few canary lists", "arms": arms}
    diff = canary["ctr"] - control["ctr"]
    se = math.sqrt(canary["ctr_var"] / canary["lists"] + control["ctr_var"] / control["lists"])
    lower = diff - 1.645 * se
    outcome = "promoted" if lower > -margin else "rolled back"
    return {"outcome": outcome, "ctr_diff": diff, "lower_95": lower, "margin": margin, "arms": arms,
            "reason": f"clicks per list {canary['ctr']:.4f} canary vs {control['ctr']:.4f} control "
                      f"({diff:+.4f}, one-sided 95% lower bound {lower:+.4f}, margin {margin})"}
