"""The Anomaly Detection Network (ADN): the classifier that LEA-Net steers (paper, Sec. 3-3).

An ADN is any feed-forward CNN that downsamples five times. We cut each one into five ``blocks``;
the output of block p is *attention point* p (feature size H/2^p), where LEA-Net may replace the
features f_p by (1 + M_p) * f_p (Eq. 3, in ``attention.py``). A ``head`` turns the last features
into one anomaly logit. All of them are written here in plain torch and trained from scratch.

* ``resnet18`` / ``resnet50`` (He et al. 2016): point 1 after the 7x7 stem, points 2..5 after the
  four residual stages (the max-pool opens stage 1), as in the released code.
* ``vgg16`` / ``vgg19`` (Simonyan & Zisserman 2015): points after each of the five max-pools. The
  head is VGG's Flatten -> 4096 -> 4096 -> logit, so its size grows with the image: at 256 px it is
  what gives VGG16 its 165.7M parameters in Table 3.
* ``cnn``: the paper's basic CNN (Tables 7-8), five [conv3x3 stride 2 -> BN -> ReLU] blocks with
  64, 128, 256, 512, 512 channels, a point after each.

Parameter counts at 256 px match Table 3 within 1% (``tests/test_networks.py`` checks them).
Departures, and why:

* One logit and a binary cross-entropy instead of a 2-way softmax: the same classifier with one
  output fewer, and the loss Eq. 1 writes.
* The paper does not give the basic CNN's head. Global average pooling -> 128 -> logit brings the
  count to its 4.0M; a flatten or a single linear layer does not.
* VGG is built as in the original paper and the released Keras code, without batch normalisation.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

MIN_IMAGE_SIZE = 32  # five halvings leave 1 pixel at point 5


def check_image_size(image_size):
    """Images must survive five halvings (attention points 1..5) exactly."""
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE or image_size % 32:
        raise ValueError(
            f"image_size must be a multiple of 32 and at least {MIN_IMAGE_SIZE} (five downsamplings to "
            f"attention point 5), got {image_size!r}"
        )


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block; a 1x1 projection on the shortcut when the shape changes."""

    expansion = 1

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            conv_bn_relu(in_channels, channels, 3, stride),
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x):  # (N, in_channels, h, w)
        return torch.relu(self.residual(x) + self.shortcut(x))  # (N, out_channels, h / stride, w / stride)


class Bottleneck(nn.Module):
    """ResNet-50's 1x1 -> 3x3 -> 1x1 residual block, four times wider at its output."""

    expansion = 4

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            conv_bn_relu(in_channels, channels, 1),
            conv_bn_relu(channels, channels, 3, stride),
            nn.Conv2d(channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x):  # (N, in_channels, h, w)
        return torch.relu(self.residual(x) + self.shortcut(x))  # (N, 4 * channels, h / stride, w / stride)


def shortcut(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


def resnet_stage(block, in_channels, channels, depth, stride):
    layers = [block(in_channels, channels, stride)]
    layers += [block(channels * block.expansion, channels) for _ in range(depth - 1)]
    return nn.Sequential(*layers)


class FivePointNet(nn.Module):
    """Five blocks (one per attention point) and a head: the shape every ADN and CAAN shares.

    ``forward`` returns the logit (N,) and the features at the five points; ``attention.py``
    walks the blocks itself to insert attention.
    """

    def __init__(self, blocks, head):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # (N, C_in, S, S)
        points = []
        for block in self.blocks:
            x = block(x)  # block p: (N, C_p, S / 2**p, S / 2**p)
            points.append(x)
        return self.head(x).squeeze(1), points  # (N,), five (N, C_p, S / 2**p, S / 2**p)


def resnet(block, depths, in_channels):
    stem = conv_bn_relu(in_channels, 64, 7, stride=2)
    stages, width = [], 64
    for index, (channels, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        stages.append(resnet_stage(block, width, channels, depth, stride=1 if index == 0 else 2))
        width = channels * block.expansion
    stages[0] = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), stages[0])
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))
    return FivePointNet([stem, *stages], head)


# VGG: channels of the convolutions in each of the five blocks; every block ends in a max-pool.
VGG_BLOCKS = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def vgg(name, in_channels, image_size):
    blocks = []
    for channels in VGG_BLOCKS[name]:
        layers = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = out_channels
        blocks.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
    flat = 512 * (image_size // 32) ** 2
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 1),
    )
    return FivePointNet(blocks, head)


def basic_cnn(in_channels):
    widths = (in_channels, 64, 128, 256, 512, 512)
    blocks = [conv_bn_relu(a, b, 3, stride=2) for a, b in zip(widths, widths[1:])]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 128), nn.ReLU(inplace=True),
                         nn.Linear(128, 1))
    return FivePointNet(blocks, head)


# Every ADN, declared once ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ADN:
    """One ADN: its name in the tables, how to build it, and its Adam learning rate in the paper.

    ``build(in_channels, image_size)`` returns a ``FivePointNet``. The paper gives lr 1e-4 for
    ResNet18 and 1e-5 for VGG16 (Section 4-2); ResNet50 and the basic CNN follow ResNet18, VGG19
    follows VGG16. Adding an ADN is one entry in ``ADN_NAMES``: the models, the CLI and the tables follow.
    """
    label: str
    build: Callable
    lr: float


ADN_NAMES = {
    "resnet18": ADN("ResNet18", lambda in_channels, size: resnet(BasicBlock, (2, 2, 2, 2), in_channels), 1e-4),
    "resnet50": ADN("ResNet50", lambda in_channels, size: resnet(Bottleneck, (3, 4, 6, 3), in_channels), 1e-4),
    "vgg16": ADN("VGG16", lambda in_channels, size: vgg("vgg16", in_channels, size), 1e-5),
    "vgg19": ADN("VGG19", lambda in_channels, size: vgg("vgg19", in_channels, size), 1e-5),
    "cnn": ADN("CNN", lambda in_channels, size: basic_cnn(in_channels), 1e-4),
}


def make_adn(name, in_channels=3, image_size=256):
    """Build the ADN ``name`` for ``in_channels``-channel images of ``image_size`` px."""
    if name not in ADN_NAMES:
        raise ValueError(f"unknown ADN {name!r}; choose one of {', '.join(ADN_NAMES)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    check_image_size(image_size)
    return ADN_NAMES[name].build(in_channels, image_size)
