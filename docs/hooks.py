"""MkDocs hooks: tutorials execute in their fast mode when the site is built."""
import os


def on_config(config):
    os.environ.setdefault("MINIRATTN_FAST", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    return config
