"""The ranking path that the server and `firstlight evaluate` share: a hybrid first stage (BM25 beside
FAISS, fused) and a cross-encoder second stage. An offline figure is what visitors get."""
