"""Where recommendations are served: a Ray Serve application (``serve.app``) of a FastAPI gateway,
autoscaled Encoder replicas and a Retriever over the FAISS product index, behind one HTTP endpoint."""
