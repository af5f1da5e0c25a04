"""Where recommendations are served: the FAISS product index (and, later, the Ray Serve app)."""
