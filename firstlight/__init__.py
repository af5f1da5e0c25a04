"""FirstLight: cold-start product recommendation from what a new visitor writes.

This package is the top layer: the command line (``firstlight.cli``) and the main job
(``firstlight.pipeline``). The stages live below it, each in its own package, and point one way:

    firstlight (cli, pipeline)
      -> serve, train -> evaluation -> data_pipeline -> model -> common
"""

__version__ = "0.1.0"
