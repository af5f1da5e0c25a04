"""Where the encoder is fine-tuned: Ray Train runs DeepSpeed (or DDP) over N workers.

Read in this order: ``config`` (the recipe), ``pairs`` (training data), ``losses`` (InfoNCE over all
workers, plain or cached), ``engine`` (DeepSpeed / DDP), ``loop`` (what each worker runs),
``checkpoints`` (save, resume, export), ``driver`` (config in, TorchTrainer out)."""
