"""Looking inside a network: the masks M of every attention module, and the feature response
of each stage (paper Fig. 4)."""
from __future__ import annotations

from .. import backend


def collect_masks(model, x, training=False):
    """Run ``x`` through ``model`` (eval mode by default) and return
    ``{module_name: M}`` for every attention module, each M shaped like its trunk output."""
    with model.mode(training):
        model(x)
    return {name: m.last_mask for name, m in model.attention_modules()}


def feature_response(model, x, training=False):
    """Mean absolute value of each stage's output for batch ``x``: a list, one float per stage."""
    with model.mode(training):
        model(x)
    xp = backend.xp_of(x)
    return [float(xp.abs(h).mean()) for h in model.stage_outputs]
