"""Where the model lives: the text encoder (``model.encoder``, the one way FirstLight loads a model),
model folders and ensembles, exports in the sentence-transformers format, soups, and pretrained
encoders fetched from PyPI."""
