"""How FirstLight measures quality: the BM25 baseline, IR metrics (ranx) and rank fusion."""
