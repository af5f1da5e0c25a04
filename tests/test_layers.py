"""The packages are layers: imports point down only, and none hides a cycle inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each package and the packages it may import (below it)
LAYERS = ["common", "model", "data_pipeline", "ranking", "evaluation", "train", "serve", "firstlight"]
ALLOWED = {
    "common": set(),
    "model": {"common"},
    "data_pipeline": {"common", "model"},
    "ranking": {"common", "model", "data_pipeline"},
    "evaluation": {"common", "model", "data_pipeline", "ranking"},
    "train": {"common", "model", "data_pipeline", "ranking", "evaluation"},
    "serve": {"common", "model", "data_pipeline", "ranking"},
    "firstlight": set(LAYERS) - {"firstlight"},
}


def project_imports():
    """(module, imported project module, whether the import sits inside a function or class)."""
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in LAYERS:
                        yield module, name, node.col_offset > 0


def test_packages_import_only_the_layers_below_them():
    wrong = [(m, n) for m, n, _ in project_imports()
             if n.split(".")[0] != m.split(".")[0] and n.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not wrong


def test_no_project_module_is_imported_inside_a_function():
    assert not [(m, n) for m, n, nested in project_imports() if nested]


def test_modules_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for module, name, _ in project_imports():
        graph.setdefault(module, set()).add(name)
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError(" -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        path.pop()
        done.add(node)

    for module in list(graph):
        visit(module)


@pytest.mark.parametrize("module", ["serve.gateway", "serve.retriever_deployment"])
def test_only_the_model_replicas_load_torch(module):
    """The gateway validates and routes, the Retriever searches FAISS and BM25: only the Encoder and
    the Reranker need torch's memory."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
