"""STAR's landmark network (ZhenglinZhou/STAR ``StackedHGNetV1`` with OpenFace 3.0's ``alignment`` config
for WFLW: 256×256 input, 4 stacks, 4 levels, 256 channels, CoordConv, AAM; ``openface/STAR/lib/backbone``
in ``openface-test==0.1.26``).

The official forward returns (per-stack outputs, fusion heatmaps, landmarks); :class:`StackedHourglass`
returns only the last stack's landmarks [N,98,2] in [-1, 1] crop coordinates, which is what aud runs.
Every stack's heatmaps are instance-normalised and ReLU'd, masked by the AAM point and edge maps, and
turned into coordinates as the heatmap-weighted mean of a [-1, 1] grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POINTS = 98
SIZE = 256
STACKS = 4
LEVELS = 4
CHANNELS = 256

# WFLW's facial contours (closed?, point indices), which the AAM edge maps follow (conf/alignment.py).
WFLW_EDGES = (
    (False, tuple(range(33))),  # face contour
    (True, tuple(range(33, 42))),  # right eyebrow
    (True, tuple(range(42, 51))),  # left eyebrow
    (False, tuple(range(51, 55))),  # nose line
    (False, tuple(range(55, 60))),  # nose
    (True, tuple(range(60, 68))),  # right eye
    (True, tuple(range(68, 76))),  # left eye
    (True, tuple(range(76, 88))),  # outer lip
    (True, tuple(range(88, 96))),  # inner lip
)


class ConvBlock(nn.Module):
    """Conv (with bias, "same" padding), then optional BN and ReLU: keys ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, bn: bool = False,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, bias=True)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class ResBlock(nn.Module):
    """Pre-activation bottleneck. ``skip_layer`` exists (and is in the checkpoint) even when unused."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = ConvBlock(cin, mid, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = ConvBlock(mid, mid, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = ConvBlock(mid, cout, 1, relu=False)
        self.skip_layer = ConvBlock(cin, cout, 1, relu=False)
        self.need_skip = cin != cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.skip_layer(x) if self.need_skip else x
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + residual


def coordinate_channels(x: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """STAR's ``AddCoordsTh`` x and y channels [N,1,width,height]: -1 to 1 along each axis."""
    xs = torch.arange(width, dtype=torch.float32) / (width - 1) * 2 - 1
    ys = torch.arange(height, dtype=torch.float32) / (height - 1) * 2 - 1
    xx = xs.view(1, 1, width, 1).expand(1, 1, width, height)  # x varies along dim 2, as upstream's permute
    yy = ys.view(1, 1, 1, height).expand(1, 1, width, height)
    n = x.shape[0]
    return xx.repeat(n, 1, 1, 1).to(x), yy.repeat(n, 1, 1, 1).to(x)


class AddCoords(nn.Module):
    """Appends x, y, r (r = distance from the centre / its maximum) and, given a heatmap, the x and y
    channels where the heatmap's last point map exceeds 0.05 (the "boundary" channels)."""

    def __init__(self, width: int, height: int, with_boundary: bool) -> None:
        super().__init__()
        self.width, self.height, self.with_boundary = width, height, with_boundary

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None) -> torch.Tensor:
        xx, yy = coordinate_channels(x, self.width, self.height)
        rr = torch.sqrt(torch.pow(xx, 2) + torch.pow(yy, 2))
        rr = rr / torch.max(rr)
        channels = [x, xx, yy, rr]
        if self.with_boundary and heatmap is not None:
            boundary = torch.clamp(heatmap[:, -1:, :, :], 0.0, 1.0)
            zero = torch.zeros_like(xx)
            channels += [torch.where(boundary > 0.05, xx, zero), torch.where(boundary > 0.05, yy, zero)]
        return torch.cat(channels, dim=1)


class CoordConv(nn.Module):
    """``CoordConvTh``: coordinate channels, then conv (+ BN, ReLU). Keys ``conv`` and ``bn``."""

    def __init__(self, width: int, height: int, with_boundary: bool, cin: int, cout: int, kernel: int,
                 stride: int, padding: int, first_one: bool = False, bn: bool = False,
                 relu: bool = False) -> None:
        super().__init__()
        self.addcoords = AddCoords(width, height, with_boundary)
        extra = 3 + (2 if with_boundary and not first_one else 0)
        self.conv = nn.Conv2d(cin + extra, cout, kernel, stride, padding)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = relu

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(self.addcoords(x, heatmap))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class Hourglass(nn.Module):
    def __init__(self, levels: int, channels: int, add_coord: bool = False, first_one: bool = False,
                 size: int = SIZE // STACKS) -> None:
        super().__init__()
        self.coordconv = (CoordConv(size, size, True, channels, channels, 1, 1, 0, first_one=first_one)
                          if add_coord else None)
        self.up1 = ResBlock(channels, channels)
        self.low1 = ResBlock(channels, channels)
        self.low2 = Hourglass(levels - 1, channels) if levels > 1 else ResBlock(channels, channels)
        self.low3 = ResBlock(channels, channels)

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None) -> torch.Tensor:
        if self.coordconv is not None:
            x = self.coordconv(x, heatmap)
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, 2))))
        return up1 + F.interpolate(low, scale_factor=2.0, mode="nearest")


class EdgeToHeatmap(nn.Module):
    """``E2HTransform``: a fixed 1x1 convolution from edge maps to point maps (buffers ``weight``, ``bias``
    come from the checkpoint)."""

    def __init__(self, edges=WFLW_EDGES, points: int = POINTS) -> None:
        super().__init__()
        matrix = torch.zeros(points, len(edges))
        for e, (_, indices) in enumerate(edges):
            matrix[list(indices), e] = 1
        self.register_buffer("weight", matrix.view(points, len(edges), 1, 1))
        self.register_buffer("bias", (matrix.sum(dim=1) < 0.5).float())

    def forward(self, edgemaps: torch.Tensor) -> torch.Tensor:
        weight, bias = self.get_buffer("weight"), self.get_buffer("bias")
        return F.conv2d(edgemaps, weight=weight, bias=bias)


def heatmap_coordinates(heatmap: torch.Tensor) -> torch.Tensor:
    """STAR's default decoder: per point the heatmap-weighted mean of a [-1, 1] grid, as (x, y)."""
    _, _, h, w = heatmap.shape
    yy, xx = torch.meshgrid(torch.arange(h).float() / (h - 1) * 2 - 1,
                            torch.arange(w).float() / (w - 1) * 2 - 1, indexing="ij")
    yy = yy.view(1, 1, h, w).to(heatmap)
    xx = xx.view(1, 1, h, w).to(heatmap)
    total = torch.clamp(heatmap.sum([2, 3]), min=1e-6)
    return torch.stack([(xx * heatmap).sum([2, 3]) / total, (yy * heatmap).sum([2, 3]) / total], dim=-1)


class StackedHourglass(nn.Module):
    """[N,3,256,256] (BGR/255·2−1) to the last stack's landmarks [N,98,2] in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        edges = len(WFLW_EDGES)
        self.pre = nn.Sequential(
            CoordConv(SIZE, SIZE, False, 3, 64, 7, 2, 3, bn=True, relu=True),
            ResBlock(64, 128), nn.MaxPool2d(2, 2), ResBlock(128, 128), ResBlock(128, CHANNELS),
        )
        self.hgs = nn.ModuleList(Hourglass(LEVELS, CHANNELS, add_coord=True, first_one=i == 0)
                                 for i in range(STACKS))
        self.features = nn.ModuleList(
            nn.Sequential(ResBlock(CHANNELS, CHANNELS), ConvBlock(CHANNELS, CHANNELS, 1, bn=True, relu=True))
            for _ in range(STACKS))
        self.out_heatmaps = nn.ModuleList(ConvBlock(CHANNELS, POINTS, 1, relu=False) for _ in range(STACKS))
        self.e2h_transform = EdgeToHeatmap()
        self.out_edgemaps = nn.ModuleList(ConvBlock(CHANNELS, edges, 1, relu=False) for _ in range(STACKS))
        self.out_pointmaps = nn.ModuleList(ConvBlock(CHANNELS, POINTS, 1, relu=False) for _ in range(STACKS))
        self.merge_edgemaps = nn.ModuleList(ConvBlock(edges, CHANNELS, 1, relu=False)
                                            for _ in range(STACKS - 1))
        self.merge_pointmaps = nn.ModuleList(ConvBlock(POINTS, CHANNELS, 1, relu=False)
                                             for _ in range(STACKS - 1))
        self.merge_features = nn.ModuleList(ConvBlock(CHANNELS, CHANNELS, 1, relu=False)
                                            for _ in range(STACKS - 1))
        self.merge_heatmaps = nn.ModuleList(ConvBlock(POINTS, CHANNELS, 1, relu=False)
                                            for _ in range(STACKS - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        heatmaps = None
        landmarks = x  # replaced in the first stack
        for i in range(STACKS):
            feature = self.features[i](self.hgs[i](x, heatmap=heatmaps))
            heatmaps = F.relu(F.instance_norm(self.out_heatmaps[i](feature)))
            pointmaps = torch.sigmoid(self.out_pointmaps[i](feature))
            edgemaps = torch.sigmoid(self.out_edgemaps[i](feature))
            fusion = self.e2h_transform(edgemaps) * pointmaps * heatmaps
            landmarks = heatmap_coordinates(fusion)
            if i < STACKS - 1:
                x = x + self.merge_features[i](feature) + self.merge_heatmaps[i](heatmaps)
                x = x + self.merge_pointmaps[i](pointmaps)
                x = x + self.merge_edgemaps[i](edgemaps)
        return landmarks
