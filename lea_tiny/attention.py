"""Layer-wise external attention (Sec. 3-4, 3-5, Fig. 2) and every model of Table 3.

The mechanism is two lines. At attention point p, CAAN's features g_p (C channels, H_p x W_p)
become one attention map, and the ADN's features f_p are re-weighted by it:

    M_p  = sigmoid(mean over channels of g_p)        # Eq. 2
    f'_p = (1 + M_p) * f_p                           # Eq. 3

Why 1 + M and not M: M lies in (0, 1), so M * f would shrink every feature, and a feature that
CAAN does not highlight would be all but erased (with ReLU features this starves the layers after
it of gradient, the "dying ReLU" the paper cites). With 1 + M the ADN keeps all it saw and
highlighted regions count up to twice as much.

``make_model`` builds every row of Table 3 as one module called ``model(rgb, anomaly_map)``:

==================== ===================================================================
variant              what the ADN sees
==================== ===================================================================
baseline             RGB
anomaly_map_input    the anomaly map alone (1 channel)
4ch_input            RGB and the map as 4 channels
attentioned_input    RGB * (1 + M) with M = sigmoid(map): Eq. 2-3 applied to the input
direct_attention     RGB; at point p, f' = (1 + M) f with M = sigmoid(map averaged to p's size)
caan_mobilenet       RGB; at point p, f' = (1 + M_p) f with M_p from a MobileNet CAAN (LEA-Net)
caan_resnet          RGB; at point p, f' = (1 + M_p) f with M_p from a ResNet CAAN (LEA-Net)
==================== ===================================================================

Direct Attention shrinks the map with area averaging (the released code's 2x2 average-pooling
cascade); CAAN features already have the size of point p, so no resizing happens there.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lea_tiny.adn import ADN_NAMES, check_image_size, make_adn
from lea_tiny.caan import make_caan
from lea_tiny.checks import check_float32, check_unit_range, is_int

VARIANTS = ("baseline", "anomaly_map_input", "4ch_input", "attentioned_input", "direct_attention",
            "caan_mobilenet", "caan_resnet")
ATTENTION_VARIANTS = ("direct_attention", "caan_mobilenet", "caan_resnet")
ATTENTION_POINTS = (1, 2, 3, 4, 5)
ADN_INPUT_CHANNELS = {"baseline": 3, "anomaly_map_input": 1, "4ch_input": 4, "attentioned_input": 3}


def attention_map(features):
    """Eq. 2: (N, C, h, w) features -> (N, 1, h, w) attention in (0, 1)."""
    if features.dim() != 4:
        raise ValueError(f"features must be shaped (N, C, h, w), got shape {tuple(features.shape)}")
    return torch.sigmoid(features.mean(dim=1, keepdim=True))


def apply_attention(features, attention):
    """Eq. 3: (1 + M) * f, M broadcast over channels and resized bilinearly to f's size if needed."""
    if features.dim() != 4 or attention.dim() != 4 or attention.shape[1] != 1:
        raise ValueError(
            f"features must be (N, C, h, w) and attention (N, 1, h', w'), got shapes "
            f"{tuple(features.shape)} and {tuple(attention.shape)}"
        )
    if attention.shape[-2:] != features.shape[-2:]:
        attention = F.interpolate(attention, size=features.shape[-2:], mode="bilinear", align_corners=False)
    return (1 + attention) * features


class AnomalyDetector(nn.Module):
    """An ADN, optionally steered at one attention point by a CAAN or by the map itself."""

    def __init__(self, variant, adn, attention_point, image_size):
        super().__init__()
        self.variant, self.adn_name = variant, adn
        self.attention_point, self.image_size = attention_point, image_size
        self.adn = make_adn(adn, ADN_INPUT_CHANNELS.get(variant, 3), image_size)
        self.caan = make_caan(variant.removeprefix("caan_"), image_size) if variant.startswith("caan_") else None

    def forward(self, rgb, anomaly_map, return_features=False):
        self._check_inputs(rgb, anomaly_map)
        caan_logit = caan_points = None
        if self.caan is not None:
            caan_logit, caan_points = self.caan(anomaly_map)

        x = self._adn_input(rgb, anomaly_map)
        points, before, attention = [], None, None
        for point, block in enumerate(self.adn.blocks, start=1):
            x = block(x)
            if point == self.attention_point:
                if caan_points is not None:
                    attention = attention_map(caan_points[point - 1])
                else:
                    # Direct Attention: the map, averaged down to this point's size, stands in for
                    # CAAN's features; with one channel, Eq. 2's channel mean is the map itself.
                    attention = attention_map(F.interpolate(anomaly_map, size=x.shape[-2:], mode="area"))
                before, x = x, apply_attention(x, attention)
            points.append(x)
        adn_logit = self.adn.head(x).squeeze(1)
        if return_features:
            return adn_logit, caan_logit, {"points": points, "before": before, "attention": attention}
        return adn_logit, caan_logit

    def _adn_input(self, rgb, anomaly_map):
        if self.variant == "anomaly_map_input":
            return anomaly_map
        if self.variant == "4ch_input":
            return torch.cat([rgb, anomaly_map], dim=1)
        if self.variant == "attentioned_input":
            return apply_attention(rgb, attention_map(anomaly_map))
        return rgb

    def _check_inputs(self, rgb, anomaly_map):
        check_float32(rgb, "rgb")
        check_float32(anomaly_map, "anomaly_map")
        size = self.image_size
        if rgb.dim() != 4 or rgb.shape[1:] != (3, size, size):
            raise ValueError(f"rgb must be shaped (N, 3, {size}, {size}) for this model, got {tuple(rgb.shape)}")
        if anomaly_map.dim() != 4 or anomaly_map.shape[1] != 1:
            raise ValueError(f"anomaly_map must be shaped (N, 1, H, W), got {tuple(anomaly_map.shape)}")
        if anomaly_map.shape[-2:] != rgb.shape[-2:] or len(anomaly_map) != len(rgb):
            raise ValueError(
                f"anomaly_map {tuple(anomaly_map.shape)} must match the images {tuple(rgb.shape)} in batch and size"
            )
        # The values are checked in eval mode only: in training mode the caller is fit's loop, which
        # checked its data once, and a pass over every batch would cost a device sync per step.
        if not self.training:
            check_unit_range(rgb, "rgb")
            check_unit_range(anomaly_map, "anomaly_map", fix="scale it with lea_tiny.colorize.scale_maps")


def make_model(variant, adn="resnet18", attention_point=None, image_size=256):
    """One row of Table 3: ``model(rgb, anomaly_map) -> (adn_logit, caan_logit or None)``.

    ``rgb`` is (N, 3, S, S) and ``anomaly_map`` (N, 1, S, S), already scaled for the networks
    (``colorize.scale_maps``), both float32 in [0, 1]; the values are checked in eval mode.
    ``attention_point`` (an int in 1..5) is required by the attention variants and refused by the others.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if adn not in ADN_NAMES:
        raise ValueError(f"unknown ADN {adn!r}; choose one of {', '.join(ADN_NAMES)}")
    if variant in ATTENTION_VARIANTS:
        if not is_int(attention_point) or attention_point not in ATTENTION_POINTS:
            raise ValueError(f"variant {variant!r} needs attention_point in 1..5, got {attention_point!r}")
    elif attention_point is not None:
        raise ValueError(f"variant {variant!r} has no attention point; got attention_point={attention_point!r}")
    check_image_size(image_size)
    return AnomalyDetector(variant, adn, attention_point, image_size)
