r"""Loggers of the plugin that print like LLaMA-Factory's (its handler is attached to `llamafactory` only)."""

import logging as std_logging

from llamafactory.extras import logging


PLUGIN_ROOT = "llamafactory_fea"


def get_logger(name: str) -> "logging._Logger":
    r"""A logger under `llamafactory_fea` that shares LLaMA-Factory's handler, level and rank-0 helpers."""
    host_root = logging.get_logger()  # configures LLaMA-Factory's handler
    plugin_root = std_logging.getLogger(PLUGIN_ROOT)
    if not plugin_root.handlers:
        for handler in host_root.handlers:
            plugin_root.addHandler(handler)

        plugin_root.setLevel(host_root.level)
        plugin_root.propagate = False

    return logging.get_logger(name)
