"""OpenFace 3.0's multitask network (``openface/model/MTL.py``, ``openface/model/AU_model.py`` in
``openface-test==0.1.26``): an EfficientNet-B0 feature extractor, then per task a Linear+ReLU and a head:
emotion logits [N,8], gaze [N,2] (yaw, pitch) and the AU graph head [N,8].

The AU head gives each AU its own linear projection of the features (a node), links every node to its 4
most similar nodes by dot product (a graph rebuilt for every image), mixes the nodes over that graph once
(``x + BN(A·V(x) + U(x))``, ReLU), and scores each node as the cosine similarity between it and a learned
per-AU vector (``sc``, after ReLU): every AU output is in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet import EfficientNetB0

EMOTIONS = 8
AUS = 8
NEIGHBOURS = 4


class GraphLayer(nn.Module):
    """The AU head's ``GNN`` with the "dots" metric."""

    def __init__(self, channels: int, nodes: int, neighbours: int = NEIGHBOURS) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.U = nn.Linear(channels, channels)
        self.V = nn.Linear(channels, channels)
        self.bnv = nn.BatchNorm1d(nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        si = x.detach()
        si = torch.einsum("bij,bjk->bik", si, si.transpose(1, 2))
        threshold = si.topk(k=self.neighbours, dim=-1, largest=True)[0][:, :, -1].view(b, n, 1)
        adjacency = (si >= threshold).float()
        a = _normalise_graph(adjacency)
        aggregate = torch.einsum("bij,bjk->bik", a, self.V(x))
        return F.relu(x + self.bnv(aggregate + self.U(x)))


def _normalise_graph(adjacency: torch.Tensor) -> torch.Tensor:
    """D^-1/2 · A · D^-1/2 with D the row sums (node degrees)."""
    b, n, _ = adjacency.shape
    inv_sqrt = adjacency.detach().sum(dim=-1) ** -0.5
    d = torch.eye(n).view(1, n, n) * inv_sqrt.view(b, n, 1)
    return torch.bmm(torch.bmm(d, adjacency), d)


class AUHead(nn.Module):
    """The AU ``Head``: per-AU projections, one graph layer, cosine similarity to ``sc``."""

    def __init__(self, channels: int, aus: int = AUS) -> None:
        super().__init__()
        self.class_linears = nn.ModuleList(nn.Linear(channels, channels) for _ in range(aus))
        self.gnn = GraphLayer(channels, aus)
        self.sc = nn.Parameter(torch.zeros(aus, channels))
        nn.init.xavier_uniform_(self.sc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = torch.cat([layer(x).unsqueeze(1) for layer in self.class_linears], dim=1)
        nodes = self.gnn(nodes)
        _, n, c = nodes.shape
        sc = F.normalize(F.relu(self.sc), p=2, dim=-1)
        cl = F.normalize(nodes, p=2, dim=-1)
        return (cl * sc.view(1, n, c)).sum(dim=-1)


class MTL(nn.Module):
    """[N,3,224,224] (RGB, ImageNet-normalised) to (emotion [N,8], gaze [N,2], au [N,8])."""

    def __init__(self) -> None:
        super().__init__()
        self.base_model = EfficientNetB0()
        c = self.base_model.num_features
        self.fc_emotion = nn.Linear(c, c)
        self.fc_gaze = nn.Linear(c, c)
        self.fc_au = nn.Linear(c, c)
        self.emotion_classifier = nn.Linear(c, EMOTIONS)
        self.gaze_regressor = nn.Linear(c, 2)
        self.au_regressor = AUHead(c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.base_model(x)
        emotion = self.emotion_classifier(F.relu(self.fc_emotion(features)))
        gaze = self.gaze_regressor(F.relu(self.fc_gaze(features)))
        au = self.au_regressor(F.relu(self.fc_au(features)))
        return emotion, gaze, au
