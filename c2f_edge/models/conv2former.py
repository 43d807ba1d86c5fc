"""Conv2Former (Hou et al., TPAMI 2024).

Module and parameter names follow the official HVision-NKU/Conv2Former code exactly, so its
checkpoints load unchanged. Training-only parts (drop path) are left out: they hold no parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor (the official `channels_first` form)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SpatialAttention(nn.Module):
    """Convolutional modulation: proj(dwKxK(gelu(conv1x1(x))) * conv1x1(x))."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.att = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
        )
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.proj(self.att(x) * self.v(x))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.norm(x)))
        x = x + self.act(self.pos(x))
        return self.fc2(x)


class Block(nn.Module):
    def __init__(self, dim: int, kernel_size: int, mlp_ratio: int = 4, layer_scale_init: float = 1e-6):
        super().__init__()
        self.attn = SpatialAttention(dim, kernel_size)
        self.mlp = MLP(dim, mlp_ratio)
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1[:, None, None] * self.attn(x)
        return x + self.layer_scale_2[:, None, None] * self.mlp(x)


class Conv2Former(nn.Module):
    def __init__(self, dims, depths, kernel_size: int = 11, mlp_ratios=(4, 4, 4, 4), in_chans: int = 3,
                 num_classes: int = 1000, head_dim: int = 1280):
        super().__init__()
        self.dims, self.depths, self.kernel_size = list(dims), list(depths), kernel_size
        self.num_classes = num_classes
        half = dims[0] // 2
        stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, stride=2, padding=1, bias=False),
            nn.GELU(),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
            nn.GELU(),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, dims[0], 2, stride=2, bias=False),
        )
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], kernel_size, mlp_ratios[i]) for _ in range(depths[i])])
            for i in range(len(dims)))
        self.head = nn.Sequential(nn.Conv2d(dims[-1], head_dim, 1), nn.GELU(), LayerNorm(head_dim))
        self.pred = nn.Linear(head_dim, num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.head(x).mean([-2, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    # The official init: trunc-normal(0.02) weights, zero biases.
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
