"""The registry: every network of the paper by name, with the paper's parameter count.

    >>> from minirattn.models import build, list_models
    >>> net = build("attention92", num_classes=10)          # 1,959,706 parameters
    >>> list_models()                                        # names, descriptions, counts
"""
from __future__ import annotations

from ..checks import check_choice, old_name
from .networks import NetworkSpec, ResidualAttentionNetwork


def _cifar(m, p=1, t=2, r=1):
    return NetworkSpec(modules=(m, m, m), p=p, t=t, r=r)


def _imagenet(modules, unit="preact"):
    return NetworkSpec(
        unit=unit,
        modules=modules,
        widths=(256, 512, 1024),
        pools=(3, 2, 1),
        stem="imagenet",
        stem_width=64,
        final_width=2048,
        final_units=3,
        final_stride=2,
        input_size=224,
    )


#: name -> (spec, description, parameters the paper reports (None where it gives none))
REGISTRY = {
    "attention56": (_cifar(1), "CIFAR Attention-56, m=1", None),
    "attention92": (_cifar(2), "CIFAR Attention-92, m=2", 1.9e6),
    "attention128": (_cifar(3), "CIFAR Attention-128, m=3", None),
    "attention164": (_cifar(4), "CIFAR Attention-164, m=4", None),
    "attention236": (_cifar(6), "CIFAR Attention-236, m=6", 5.1e6),
    "attention452": (_cifar(6, p=2, t=4, r=3), "CIFAR Attention-452, m=6, p=2, t=4, r=3", 8.6e6),
    "attention56_small": (_cifar(1).replace(widths=(16, 32, 64), stem_width=16, final_width=64),
                          "Attention-56 layout at 1/4 width: the embedded-data demo", None),
    "resnet164": (NetworkSpec(modules=(0, 0, 0), units=(17, 17, 17), final_units=0),
                  "CIFAR pre-activation ResNet-164 (the paper's baseline)", 1.7e6),
    "attention56_imagenet": (_imagenet((1, 1, 1)), "ImageNet Attention-56 (Table 2)", 31.9e6),
    "attention92_imagenet": (_imagenet((1, 2, 3)), "ImageNet Attention-92 (Table 2)", 51.3e6),
    "attentionnext56_imagenet": (_imagenet((1, 1, 1), "resnext"),
                                 "ImageNet AttentionNeXt-56: ResNeXt units (32 groups, width C/2), "
                                 "as the authors' prototxt", None),
    "attentionnext92_imagenet": (_imagenet((1, 2, 3), "resnext"),
                                 "ImageNet AttentionNeXt-92: ResNeXt units, as the authors' "
                                 "prototxt", None),
    "attentioninception56_imagenet": (_imagenet((1, 1, 1), "inception"),
                                      "ImageNet AttentionInception-56: pre-activation "
                                      "Inception-ResNet-A units (3 branches of C/8; layout chosen "
                                      "here, docs/architecture.md)", None),
}


def build(
    name: str,
    num_classes: int = 10,
    mask_activation: str = "mixed",
    learning: str = "arl",
    mask: str = "soft",
    *,
    seed: int = 0,
    dtype="float32",
    **spec_overrides,
) -> ResidualAttentionNetwork:
    """Build a registered network; ``spec_overrides`` replace fields of its NetworkSpec
    (e.g. ``widths=(16, 32, 64), stem_width=8, final_width=64`` for a narrow one).
    ``attention=`` is accepted as the old name of ``mask_activation``."""
    mask_activation = old_name(spec_overrides, "attention", "mask_activation", mask_activation,
                               "mixed")
    check_choice("network", name, sorted(REGISTRY))
    spec = REGISTRY[name][0]
    if spec_overrides:
        unknown = set(spec_overrides) - set(NetworkSpec.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown spec fields {sorted(unknown)}: expected some of "
                             f"{sorted(NetworkSpec.__dataclass_fields__)}")
        spec = spec.replace(**spec_overrides)
    return ResidualAttentionNetwork(
        spec, num_classes, mask_activation, learning, mask, seed=seed, dtype=dtype, name=name
    )


def list_models():
    """[(name, description, paper parameter count or None)] in registry order."""
    return [(k, v[1], v[2]) for k, v in REGISTRY.items()]
