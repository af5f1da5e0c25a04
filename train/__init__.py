"""Where the model lives and is trained. ``train.encoder`` is the one way FirstLight loads a model."""
