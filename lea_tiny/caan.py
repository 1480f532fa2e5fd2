"""The Colour Anomaly Attention Network (CAAN): reads the anomaly map, writes attention (Sec. 3-2).

CAAN is a small CNN whose input is the 1-channel colour anomaly map. Like the ADN it has five
blocks; the features at the end of block p (size H/2^p) become the attention map
M_p = sigmoid(channel-mean) (Eq. 2, ``attention.py``). Its own head classifies the map, which gives
CAAN a loss of its own in Eq. 1. Table 1 describes two:

* ``resnet``: a 7x7/64 stride-2 convolution (point 1), then a max-pool and ONE basic residual block
  per stage, 64/128/256/512 channels (points 2..5), global average pooling and a logit.
  4.90M parameters, the 4.9M that Table 3 adds to ResNet18 (16.1M - 11.2M); Table 1's 4.491M
  does not follow from the layers it lists.
* ``mobilenet``: MobileNetV3-Small (Howard et al. 2019, Table 2 of that paper): inverted-residual
  bottlenecks with squeeze-excite, ReLU in the first three and hard-swish after, stride 2 at the
  stem and at the first bottleneck of each of the four later blocks, then 1x1/576 -> pool ->
  1x1/1280 -> logit. The 1280 is LEA-Net's Table 1 (Howard et al.'s Small has 1024 there, their
  Large 1280); we follow LEA-Net. The paper says its CAAN is "exactly" MobileNetV3-Small, so we keep
  hard-swish; the released code used ReLU everywhere (an activation has no parameters). Built this
  way it has 1,666,561 parameters.

Table 1's 3.042M is what Keras reports for the authors' released MobileNet CAAN, 3,041,906, and it
follows from our layers. Most of the difference is the squeeze-excite: the released code's two
dense layers map C -> C -> C, where MobileNetV3 squeezes C -> C/4 -> C. The rest is Keras'
defaults and the 2-way output:

      1,666,561  make_caan("mobilenet")
    + 1,355,560  squeeze-excite C -> C -> C (1,817,200 parameters) instead of C -> C/4 -> C (461,640)
    = 3,022,121  make_caan("mobilenet", squeeze_excite="dense")
    +     6,056  a bias on each convolution that BatchNorm follows (Keras' default; ours have none)
    +       304  a 1x1 expansion 16 -> 16 and its BatchNorm in the first bottleneck, whose expanded
                 width equals its input width (MobileNetV3 leaves the expansion out there)
    +     1,281  two outputs instead of one logit
    = 3,029,762  the released model's trainable parameters
    +    12,144  BatchNorm's moving mean and variance, 2 x 6,072 channels (our 6,056 + the 16 of that
                 expansion): Keras counts them as non-trainable parameters, torch keeps them as buffers
    = 3,041,906  Table 1's 3.042M

Table 7's 3.0M (7.0M - 4.0M) agrees; Table 3's 2.3M (13.5M - 11.2M) fits neither build. The default
stays MobileNetV3's own squeeze-excite, the network the paper names; ``squeeze_excite="dense"``
builds the released code's, for the paper's count.
"""

from torch import nn

from lea_tiny.adn import BasicBlock, FivePointNet, check_image_size, conv_bn_relu, resnet_stage

CAAN_NAMES = ("resnet", "mobilenet")
# MobileNetV3's C -> C/4 -> C, or the released code's C -> C -> C (Table 1's count)
SQUEEZE_EXCITE = ("reduced", "dense")


def resnet_caan():
    stem = conv_bn_relu(1, 64, 7, stride=2)
    stage_1 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), BasicBlock(64, 64))
    stages = [resnet_stage(BasicBlock, a, b, depth=1, stride=2) for a, b in ((64, 128), (128, 256), (256, 512))]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1))
    return FivePointNet([stem, stage_1, *stages], head)


def make_divisible(channels, divisor=8):
    """MobileNet rounds every width to a multiple of 8, never below 90% of the asked width."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class SqueezeExcite(nn.Module):
    """Channel gating (Hu et al. 2018) with MobileNetV3's hard-sigmoid.

    The gate squeezes C channels to C/4 and back (MobileNetV3); ``dense`` keeps all C in the middle,
    as the released code does.
    """

    def __init__(self, channels, dense=False):
        super().__init__()
        squeezed = channels if dense else make_divisible(channels // 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, 1), nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1), nn.Hardsigmoid(inplace=True),
        )

    def forward(self, x):  # (N, C, h, w)
        return x * self.gate(x)  # (N, C, h, w) * (N, C, 1, 1): one weight per channel


class InvertedResidual(nn.Module):
    """MobileNetV3's bneck: 1x1 expand -> depthwise kxk -> (squeeze-excite) -> 1x1 project."""

    def __init__(self, in_channels, kernel_size, expanded, out_channels, use_se, activation, stride,
                 dense_se=False):
        super().__init__()
        layers = []
        if expanded != in_channels:
            layers += [nn.Conv2d(in_channels, expanded, 1, bias=False), nn.BatchNorm2d(expanded), activation()]
        layers += [
            nn.Conv2d(expanded, expanded, kernel_size, stride, kernel_size // 2, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded), activation(),
        ]
        if use_se:
            layers.append(SqueezeExcite(expanded, dense_se))
        layers += [nn.Conv2d(expanded, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):  # (N, in_channels, h, w)
        return x + self.body(x) if self.use_residual else self.body(x)  # (N, out_channels, h / stride, w / stride)


# MobileNetV3-Small (Howard et al. 2019, Table 2), grouped by attention point (Table 1 of LEA-Net):
# (kernel, expanded width, output width, squeeze-excite, hard-swish, stride)
MOBILENET_BLOCKS = (
    ((3, 16, 16, True, False, 2),),
    ((3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1)),
    ((5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
     (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1)),
    ((5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)),
)


def mobilenet_caan(squeeze_excite="reduced"):
    stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(inplace=True))
    blocks, width = [stem], 16
    for group in MOBILENET_BLOCKS:
        layers = []
        for kernel, expanded, out_channels, use_se, hard_swish, stride in group:
            activation = nn.Hardswish if hard_swish else nn.ReLU
            layers.append(InvertedResidual(width, kernel, expanded, out_channels, use_se, activation, stride,
                                           dense_se=squeeze_excite == "dense"))
            width = out_channels
        blocks.append(nn.Sequential(*layers))
    # After the pooling, Table 1's 1x1 convolutions act on a 1 x 1 map: they are linear layers, and
    # written as nn.Linear they keep PyTorch's initialisation. FivePointNet's kaiming_normal_(fan_out)
    # for convolutions would give the 1-channel logit a weight std of sqrt(2): logits of about +-6 at
    # the start and a first CAAN loss near 5 instead of ln 2 (tests/test_networks.py checks this).
    head = nn.Sequential(
        nn.Conv2d(width, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(576, 1280), nn.Hardswish(inplace=True),
        nn.Linear(1280, 1),
    )
    return FivePointNet(blocks, head)


def make_caan(name, image_size=256, squeeze_excite="reduced"):
    """Build the CAAN ``name`` for 1-channel anomaly maps of ``image_size`` px.

    ``squeeze_excite`` (MobileNet CAAN only): "reduced" for MobileNetV3's C -> C/4 -> C, "dense" for
    the released code's C -> C -> C, which gives Table 1's parameter count (see the module docstring).
    """
    if name not in CAAN_NAMES:
        raise ValueError(f"unknown CAAN {name!r}; choose one of {', '.join(CAAN_NAMES)}")
    if squeeze_excite not in SQUEEZE_EXCITE:
        raise ValueError(f"unknown squeeze_excite {squeeze_excite!r}; choose one of {', '.join(SQUEEZE_EXCITE)}")
    if name == "resnet" and squeeze_excite != "reduced":
        raise ValueError(f"the ResNet CAAN has no squeeze-excite; squeeze_excite={squeeze_excite!r} is for 'mobilenet'")
    check_image_size(image_size)
    return resnet_caan() if name == "resnet" else mobilenet_caan(squeeze_excite)
