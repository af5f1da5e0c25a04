"""FirstLight: cold-start product recommendation from what a new visitor writes.

Stages live in their own top-level packages:

- ``data_pipeline``: where data enters (readers, text normalisation, splits, catalogue embedding).
- ``train``: where the model lives and is trained (the encoder).
- ``serve``: where recommendations are served (the FAISS product index).
- ``evaluation``: how quality is measured (BM25 baseline, metrics, fusion).

This package holds what ties them together: the command line, stage orchestration and errors.
"""

__version__ = "0.1.0"
