"""The serving baseline: the same model and FAISS index behind plain FastAPI + uvicorn, one process, no Ray.

Deliberately minimal (no batching, no replicas, no validation beyond pydantic): what a team would
write in an afternoon. `bench_serve.py` starts it; by hand:

    python benchmarks/speed/baseline_server.py --index-dir artifacts/homedepot/index --port 8100
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def make_app(index_dir: str, prepared_dir: str, backend: str = "fp32", device: str = "cpu"):
    from fastapi import FastAPI
    from pydantic import BaseModel

    from data_pipeline.index import ProductIndex
    from data_pipeline.prepare import load_catalogue
    from model.encoder import TextEncoder

    index = ProductIndex.load(Path(index_dir), use_gpu="no")
    encoder = TextEncoder.load(index.manifest["model"], max_length=64, backend=backend, device=device)
    catalogue = load_catalogue(prepared_dir)
    titles = dict(zip(catalogue["product_id"], catalogue["title"]))
    app = FastAPI()

    class Request(BaseModel):
        text: str
        k: int = 10

    @app.post("/v1/recommend")
    def recommend(req: Request):
        scores, ids = index.search(encoder.encode([req.text], role="query"), req.k)
        return {"items": [{"id": p, "title": titles.get(p, ""), "score": float(s)} for p, s in zip(ids[0], scores[0])]}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--prepared-dir", default=None, help="default: INDEX/../data")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backend", default="fp32", help="fp32 (as a user would write it), or FirstLight's auto/bf16/int8")
    args = parser.parse_args()
    prepared = args.prepared_dir or str(Path(args.index_dir).parent / "data")
    uvicorn.run(make_app(args.index_dir, prepared, args.backend, args.device), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
