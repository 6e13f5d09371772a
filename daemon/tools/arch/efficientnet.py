"""EfficientNet-B0 as timm builds ``tf_efficientnet_b0_ns`` with ``classifier = Identity``: the feature
extractor that OpenFace 3.0's MTL uses, returning the 1280 pooled features.

The ``tf_`` variants port TensorFlow weights, so they keep TensorFlow's conventions: BatchNorm eps 1e-3 and
"same" padding. A stride-1 convolution pads symmetrically (k // 2); a stride-2 one pads the input at run time
so that the output is ceil(input / 2), with the odd pixel at the bottom and right (timm's ``Conv2dSame``).
Parameter names follow timm (``conv_stem``, ``bn1``, ``blocks.<stage>.<block>.conv_pw`` …, ``conv_head``,
``bn2``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's default, kept by timm for tf_ models

# (block type, repeats, kernel, first stride, expansion, output channels) per stage; every block has
# squeeze-excitation with a quarter of the block's INPUT channels (timm's "se0.25", se_from_exp=False).
B0_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
NUM_FEATURES = 1280
SE_RATIO = 0.25


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding (static when stride is 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        static = stride == 1
        super().__init__(cin, cout, kernel, stride, padding=(kernel // 2) if static else 0, groups=groups,
                         bias=bias)
        self.dynamic_pad = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = F.pad(x, _same_pads(x.shape[-2:], self.kernel_size, self.stride))
        return super().forward(x)


def _same_pads(size, kernel, stride) -> list[int]:
    """F.pad's [left, right, top, bottom] so that the output is ceil(size / stride)."""
    pads = []
    for i, k, s in zip(size, kernel, stride):
        total = max((math.ceil(int(i) / s) - 1) * s + k - int(i), 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return [left, right, top, bottom]


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(F.silu(self.conv_reduce(s)))
        return x * torch.sigmoid(s)


class DepthwiseSeparable(nn.Module):
    """timm's ``DepthwiseSeparableConv`` (the "ds" block): depthwise, SE, pointwise (no activation)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SameConv2d(cin, cin, kernel, stride, groups=cin)
        self.bn1 = bn(cin)
        self.se = SqueezeExcite(cin, round(cin * SE_RATIO))
        self.conv_pw = SameConv2d(cin, cout, 1)
        self.bn2 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_dw(x)))
        y = self.bn2(self.conv_pw(self.se(y)))
        return y + x if self.skip else y


class InvertedResidual(nn.Module):
    """timm's ``InvertedResidual`` (the "ir" block): expand, depthwise, SE, project (no activation)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = SameConv2d(cin, mid, 1)
        self.bn1 = bn(mid)
        self.conv_dw = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn2 = bn(mid)
        self.se = SqueezeExcite(mid, round(cin * SE_RATIO))
        self.conv_pwl = SameConv2d(mid, cout, 1)
        self.bn3 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = F.silu(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.skip else y


class EfficientNetB0(nn.Module):
    """Image batch [N,3,H,W] to pooled features [N,1280]."""

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self.bn1 = bn(STEM_CHANNELS)
        stages, cin = [], STEM_CHANNELS
        for kind, repeats, kernel, stride, expansion, cout in B0_STAGES:
            blocks: list[nn.Module] = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(cin, cout, kernel, s))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = SameConv2d(cin, NUM_FEATURES, 1)
        self.bn2 = bn(NUM_FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = F.silu(self.bn2(self.conv_head(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # timm's SelectAdaptivePool2d('avg', flatten)
