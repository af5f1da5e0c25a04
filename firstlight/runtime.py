"""Start or join Ray, and set up logging, the same way for the CLI, Ray jobs and tests."""

from __future__ import annotations

import logging
import os


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster named by ``address`` or $RAY_ADDRESS (as under ``ray job submit``), reuse a
    running session, or start a local one sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard serves the State API, which Ray Train polls to watch its controller.
        ray.init(num_cpus=num_cpus, log_to_driver=True)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = True
