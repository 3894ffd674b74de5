"""64x64 frame encoders/decoders of SVG: VGG-64 and DCGAN-64, with skip connections.

encoder(x (N, C, 64, 64)) -> (h (N, g_dim), skips [4 maps at 64/32/16/8 (VGG) or 32/16/8/4 (DCGAN)])
decoder(h (N, g_dim), skips) -> logits (N, out_channels, 64, 64); the model's Compositor
    turns them into a frame (sigmoid of the first C channels when it composes nothing, SVG's
    sigmoid output; further channels are masks and flow of a compositing head).
nf scales every width (SVG uses nf=64); smaller nf gives CPU-sized models.
side > 0: every decoder stage after the first also reads `side` extra maps, a vector
(N, side - 2) tiled over the map plus the pixel coordinates (CoordConv, Liu et al. 2018):
a condition that names a place (the gripper's position) becomes a place to draw at.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def vgg_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def vgg_stack(widths: list[int]) -> nn.Sequential:
    return nn.Sequential(*(vgg_block(a, b) for a, b in zip(widths[:-1], widths[1:])))


class VGGEncoder(nn.Module):
    def __init__(self, g_dim: int, nc: int = 3, nf: int = 64):
        super().__init__()
        w1, w2, w3, w4 = nf, nf * 2, nf * 4, nf * 8
        self.c1 = vgg_stack([nc, w1, w1])  # 64x64
        self.c2 = vgg_stack([w1, w2, w2])  # 32x32
        self.c3 = vgg_stack([w2, w3, w3, w3])  # 16x16
        self.c4 = vgg_stack([w3, w4, w4, w4])  # 8x8
        self.c5 = nn.Sequential(nn.Conv2d(w4, g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())  # 1x1
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h1 = self.c1(x)
        h2 = self.c2(self.pool(h1))
        h3 = self.c3(self.pool(h2))
        h4 = self.c4(self.pool(h3))
        h5 = self.c5(self.pool(h4))
        return h5.flatten(1), [h1, h2, h3, h4]


def side_maps(vec: Tensor | None, like: Tensor) -> Tensor | None:
    """vec (N, D) tiled to like's (H, W), plus x and y in [-1, 1]: (N, D + 2, H, W)."""
    if vec is None:
        return None
    n, (h, w) = like.shape[0], like.shape[-2:]
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([vec.to(like.dtype)[:, :, None, None].expand(-1, -1, h, w), xs, ys], 1)


def stage_input(up: Tensor, skip: Tensor, side: Tensor | None) -> Tensor:
    maps = side_maps(side, up)
    return torch.cat([up, skip] if maps is None else [up, skip, maps], 1)


class VGGDecoder(nn.Module):
    def __init__(self, g_dim: int, nc: int = 3, nf: int = 64, out_channels: int | None = None, side: int = 0):
        super().__init__()
        w1, w2, w3, w4 = nf, nf * 2, nf * 4, nf * 8
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(g_dim, w4, 4, 1, 0), nn.BatchNorm2d(w4),
                                  nn.LeakyReLU(0.2, inplace=True))  # 4x4
        self.upc2 = vgg_stack([w4 * 2 + side, w4, w4, w3])  # 8x8
        self.upc3 = vgg_stack([w3 * 2 + side, w3, w3, w2])  # 16x16
        self.upc4 = vgg_stack([w2 * 2 + side, w2, w1])  # 32x32
        self.upc5 = nn.Sequential(vgg_block(w1 * 2 + side, w1), nn.Conv2d(w1, out_channels or nc, 3, 1, 1))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, h: Tensor, skips: list[Tensor], side: Tensor | None = None) -> Tensor:
        d1 = self.upc1(h[:, :, None, None])
        d2 = self.upc2(stage_input(self.up(d1), skips[3], side))
        d3 = self.upc3(stage_input(self.up(d2), skips[2], side))
        d4 = self.upc4(stage_input(self.up(d3), skips[1], side))
        return self.upc5(stage_input(self.up(d4), skips[0], side))


def dcgan_down(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def dcgan_up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


class DCGANEncoder(nn.Module):
    def __init__(self, g_dim: int, nc: int = 3, nf: int = 64):
        super().__init__()
        self.c1 = dcgan_down(nc, nf, bn=False)  # 32x32
        self.c2 = dcgan_down(nf, nf * 2)  # 16x16
        self.c3 = dcgan_down(nf * 2, nf * 4)  # 8x8
        self.c4 = dcgan_down(nf * 4, nf * 8)  # 4x4
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h1 = self.c1(x)
        h2 = self.c2(h1)
        h3 = self.c3(h2)
        h4 = self.c4(h3)
        return self.c5(h4).flatten(1), [h1, h2, h3, h4]


class DCGANDecoder(nn.Module):
    def __init__(self, g_dim: int, nc: int = 3, nf: int = 64, out_channels: int | None = None, side: int = 0):
        super().__init__()
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(g_dim, nf * 8, 4, 1, 0), nn.BatchNorm2d(nf * 8),
                                  nn.LeakyReLU(0.2, inplace=True))  # 4x4
        self.upc2 = dcgan_up(nf * 8 * 2 + side, nf * 4)  # 8x8
        self.upc3 = dcgan_up(nf * 4 * 2 + side, nf * 2)  # 16x16
        self.upc4 = dcgan_up(nf * 2 * 2 + side, nf)  # 32x32
        self.upc5 = nn.Sequential(nn.ConvTranspose2d(nf * 2 + side, out_channels or nc, 4, 2, 1))  # 64x64

    def forward(self, h: Tensor, skips: list[Tensor], side: Tensor | None = None) -> Tensor:
        d1 = self.upc1(h[:, :, None, None])
        d2 = self.upc2(stage_input(d1, skips[3], side))
        d3 = self.upc3(stage_input(d2, skips[2], side))
        d4 = self.upc4(stage_input(d3, skips[1], side))
        return self.upc5(stage_input(d4, skips[0], side))


BACKBONES = {"vgg64": (VGGEncoder, VGGDecoder), "dcgan64": (DCGANEncoder, DCGANDecoder)}
