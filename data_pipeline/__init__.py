"""Where data enters FirstLight, and the offline stages that turn it into a searchable catalogue:
file checks and readers, query splits (prepare), catalogue embedding with Ray Data (embed) and the
FAISS product index (index)."""
