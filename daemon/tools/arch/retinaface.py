"""RetinaFace with the MobileNet-0.25 backbone, as biubug6/Pytorch_Retinaface builds it with ``cfg_mnet``
and ``phase="test"`` (the copy in ``openface-test==0.1.26``: ``openface/Pytorch_Retinaface/models``):
MobileNetV1 ×0.25 stages 1–3 → FPN (64 channels) → one SSH context module per level → per level 2 anchors
of boxes [N,P,4], face/background scores [N,P,2] (softmax) and 5 landmarks [N,P,10].

Parameter names follow the official checkpoint: ``body.stage1.0.0.weight`` (the backbone as torchvision's
``IntermediateLayerGetter`` keeps it: no classifier), ``fpn.output1.0``, ``ssh1.conv3X3.0``,
``ClassHead.0.conv1x1`` and so on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ANCHORS = 2  # per location: min_sizes has two sizes per level
IN_CHANNEL = 32  # cfg_mnet["in_channel"]: stage outputs are 64, 128 and 256
OUT_CHANNEL = 64  # cfg_mnet["out_channel"]


def conv_bn(cin: int, cout: int, stride: int = 1, leaky: float = 0.0, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias), BatchNorm, LeakyReLU: keys ``.0`` (conv) and ``.1`` (BN)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(negative_slope=leaky))


def conv_bn_no_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))


def conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BN and LeakyReLU: keys ``.0 .1`` and ``.3 .4``."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
        nn.LeakyReLU(negative_slope=leaky),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(negative_slope=leaky),
    )


class Backbone(nn.Module):
    """MobileNetV1 ×0.25, stages 1 to 3 (each stage's output goes to the FPN)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1 = conv_bn(in_channels[0], out, leaky=leaky, kernel=1)
        self.output2 = conv_bn(in_channels[1], out, leaky=leaky, kernel=1)
        self.output3 = conv_bn(in_channels[2], out, leaky=leaky, kernel=1)
        self.merge1 = conv_bn(out, out, leaky=leaky)
        self.merge2 = conv_bn(out, out, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        o1 = self.output1(features[0])
        o2 = self.output2(features[1])
        o3 = self.output3(features[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(cin, cout // 2)
        self.conv5X5_1 = conv_bn(cin, cout // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(cout // 4, cout // 4)
        self.conv7X7_2 = conv_bn(cout // 4, cout // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(cout // 4, cout // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], dim=1)
        return F.relu(out)


class Head(nn.Module):
    """A 1x1 convolution giving ``per_anchor`` values per anchor, flattened to [N, H·W·anchors, per_anchor]."""

    def __init__(self, cin: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, ANCHORS * per_anchor, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """[N,3,H,W] (BGR minus (104,117,123)) to (loc [N,P,4], conf [N,P,2] softmaxed, landms [N,P,10])."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Backbone()
        self.fpn = FPN((IN_CHANNEL * 2, IN_CHANNEL * 4, IN_CHANNEL * 8), OUT_CHANNEL)
        self.ssh1 = SSH(OUT_CHANNEL, OUT_CHANNEL)
        self.ssh2 = SSH(OUT_CHANNEL, OUT_CHANNEL)
        self.ssh3 = SSH(OUT_CHANNEL, OUT_CHANNEL)
        self.ClassHead = nn.ModuleList(Head(OUT_CHANNEL, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(OUT_CHANNEL, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(OUT_CHANNEL, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landms = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms
