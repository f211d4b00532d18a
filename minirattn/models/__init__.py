"""Residual units, the attention module and its soft mask branch, the networks of the paper."""
from .units import (ResidualUnit, ResNeXtUnit, InceptionUnit, UNITS, unit_factory, stack,
                    is_post_activation)
from .attention import AttentionModule, SoftMaskBranch, LocalMask, MaskHead, MASKS, check_choices
from .networks import NetworkSpec, ResidualAttentionNetwork, validate_spec
from .zoo import build, list_models, REGISTRY
from .introspect import collect_masks, feature_response

__all__ = [n for n in dir() if not n.startswith("_")]
