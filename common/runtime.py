"""Start or join Ray, and set up logging, the same way for the CLI, Ray jobs and tests.

By default the terminal shows FirstLight's own progress and results: Ray Data's per-operator
progress flood is cut to its one "Total Progress" line, and faiss's notes on which CPU build it
loaded, DEBUG lines of libraries and numba's cast warnings are hidden. ``--verbose`` (or
``FIRSTLIGHT_VERBOSE=1``) shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "FIRSTLIGHT_VERBOSE"
_RAY_DATA_PROGRESS = "ray.data._internal.progress.logging_progress"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes", "on")


def setup_logging(level: int = logging.INFO, *, verbose_output: bool | None = None) -> None:
    """INFO lines with a time stamp on stderr; libraries quietened unless verbose."""
    if verbose_output is not None:
        os.environ[VERBOSE_ENV] = "1" if verbose_output else ""  # inherited by a local Ray's workers
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if verbose() else level)  # a library logger set to DEBUG stays quiet
    quiet_libraries()


class _TotalProgressOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return str(record.msg).startswith("Total Progress")


def quiet_libraries() -> None:
    """Hide what libraries print that a FirstLight user does not act on (unless verbose). Called again
    after Ray starts, since Ray Data sets up its loggers when it is imported."""
    if verbose():
        return
    # first, as importing Ray Train imports Ray Data, which sets up its own loggers
    try:  # Ray Train prints every report's whole metrics dict; FirstLight's own progress line says it shorter
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)  # that logger is named by its file
    except ImportError:
        pass
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # execution plans, operator start-ups
    progress = logging.getLogger(_RAY_DATA_PROGRESS)  # ... but keep one progress line per update
    progress.setLevel(logging.INFO)
    if not any(isinstance(f, _TotalProgressOnly) for f in progress.filters):
        progress.addFilter(_TotalProgressOnly())
    warnings.filterwarnings("ignore", message=".*unsafe cast.*")  # numba, inside ranx's fusion
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars, once per model load
    except ImportError:
        pass


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
    quiet_libraries()
