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

Two options come from the follow-up by the same group (Hayakawa et al., "Layer-wise External
Attention for Efficient Deep Anomaly Detection", IMPROVE 2023):

* **A learnable gate** (``gate=True``). Each attention point gets one scalar w_p, initialised to 0:

      f'_p = f_p + w_p * M_p * f_p                    # w_p = 1 is Eq. 3

  At the start the ADN is the plain classifier; it lets the map in only as far as the loss asks
  for it, and a negative w_p may even turn the attention down. One consequence: while every w_p is 0
  the ADN's loss sends the CAAN no gradient, so the CAAN first learns from its own loss alone.
  Adam moves a parameter by about its learning rate per step, so at the paper's 1e-4 a gate travels
  about 0.01 in a hundred steps: a short run keeps a gated model close to the plain ADN. What we
  know of the follow-up names no separate learning rate for the gates, and lea_tiny uses none.
* **Several attention points at once** (``attention_point=(1, 3)``): Eq. 2-3 at each of them.
"""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lea_tiny.adn import ADN_NAMES, check_image_size, make_adn
from lea_tiny.caan import make_caan
from lea_tiny.checks import check_bool, check_float32, check_unit_range, is_int

ATTENTION_POINTS = (1, 2, 3, 4, 5)


def attention_map(features):
    """Eq. 2: (N, C, h, w) features -> (N, 1, h, w) attention in (0, 1)."""
    if features.dim() != 4:
        raise ValueError(f"features must be shaped (N, C, h, w), got shape {tuple(features.shape)}")
    return torch.sigmoid(features.mean(dim=1, keepdim=True))


def apply_attention(features, attention, gate=None):
    """Eq. 3: (1 + M) * f, M broadcast over channels and resized bilinearly to f's size if needed.

    With a ``gate`` w (a scalar tensor, Hayakawa et al. 2023): f + w * M * f.
    """
    if features.dim() != 4 or attention.dim() != 4 or attention.shape[1] != 1:
        raise ValueError(
            f"features must be (N, C, h, w) and attention (N, 1, h', w'), got shapes "
            f"{tuple(features.shape)} and {tuple(attention.shape)}"
        )
    if attention.shape[-2:] != features.shape[-2:]:
        attention = F.interpolate(attention, size=features.shape[-2:], mode="bilinear", align_corners=False)
    if gate is None:
        return (1 + attention) * features
    return features + gate * attention * features


# The rows of Table 3, each declared once ------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One row of Table 3: its label, what the ADN reads, and where attention comes from.

    ``label`` is Table 3's, with ``{adn}`` for the ADN's name; ``adn_input(rgb, anomaly_map)`` is the
    ADN's input, of ``input_channels`` channels; ``attention`` is None (no attention point),
    "direct" (the map itself, Direct Attention) or the name of a CAAN (``lea_tiny.caan.make_caan``).
    Adding a variant is one entry in ``VARIANTS``: the model, the CLI's choices and the tables follow.
    """
    label: str
    adn_input: Callable
    input_channels: int = 3
    attention: str | None = None


def _rgb(rgb, anomaly_map):
    return rgb


def _map_only(rgb, anomaly_map):
    return anomaly_map


def _rgb_and_map(rgb, anomaly_map):
    return torch.cat([rgb, anomaly_map], dim=1)  # (N, 4, S, S)


def _attentioned_rgb(rgb, anomaly_map):
    return apply_attention(rgb, attention_map(anomaly_map))  # Eq. 2-3 on the input: RGB * (1 + sigmoid(map))


VARIANTS = {
    "baseline": Variant("{adn}", _rgb),
    "anomaly_map_input": Variant("{adn} (AnomalyMap input)", _map_only, input_channels=1),
    "4ch_input": Variant("{adn} (4ch input)", _rgb_and_map, input_channels=4),
    "attentioned_input": Variant("{adn} (Attentioned input)", _attentioned_rgb),
    "direct_attention": Variant("{adn} + Direct Attention", _rgb, attention="direct"),
    "caan_mobilenet": Variant("{adn} + MobileNet-small CAAN", _rgb, attention="mobilenet"),
    "caan_resnet": Variant("{adn} + ResNet-based CAAN", _rgb, attention="resnet"),
}
ATTENTION_VARIANTS = tuple(name for name, variant in VARIANTS.items() if variant.attention is not None)


class AnomalyDetector(nn.Module):
    """An ADN, optionally steered at one or more attention points by a CAAN or by the map itself.

    ``attention_points`` is always a tuple ((3,) for ``attention_point=3``, () without attention);
    ``attention_point`` is what ``make_model`` was given: an int, a sorted tuple, or None.
    ``gates`` holds the learnable w_p, one per point in that order, or is None (Eq. 3).
    """

    def __init__(self, variant, adn, attention_point, image_size, gate=False):
        super().__init__()
        self.variant, self.adn_name = variant, adn
        self.attention_point, self.image_size, self.gate = attention_point, image_size, gate
        if isinstance(attention_point, tuple):
            self.attention_points = attention_point
        else:
            self.attention_points = () if attention_point is None else (attention_point,)
        self.declaration = VARIANTS[variant]
        self.adn = make_adn(adn, self.declaration.input_channels, image_size)
        caan = self.declaration.attention not in (None, "direct")
        self.caan = make_caan(self.declaration.attention, image_size) if caan else None
        self.gates = nn.Parameter(torch.zeros(len(self.attention_points))) if gate else None
        self.caan_frozen = False

    def forward(self, rgb, anomaly_map, return_features=False):
        """(adn_logit (N,), caan_logit (N,) or None), and with ``return_features`` a dict of features.

        The dict: ``points``, the ADN's features after each of its five blocks (after attention where
        it is applied); ``before`` and ``attention``, the features f_p before Eq. 3 and the map M_p.
        For a model of one point (an int) these two are tensors (None without attention); for a model
        built with a tuple of points they are dicts {point: tensor}.
        """
        self._check_inputs(rgb, anomaly_map)  # rgb (N, 3, S, S), anomaly_map (N, 1, S, S)
        caan_logit = caan_points = None
        if self.caan is not None:
            caan_logit, caan_points = self.caan(anomaly_map)  # (N,), five g_p (N, C'_p, S / 2**p, S / 2**p)

        x = self.declaration.adn_input(rgb, anomaly_map)  # (N, input_channels, S, S)
        points, before, attention = [], {}, {}
        for point, block in enumerate(self.adn.blocks, start=1):
            x = block(x)  # f_p: (N, C_p, S / 2**p, S / 2**p)
            if point in self.attention_points:
                if caan_points is not None:
                    attention[point] = attention_map(caan_points[point - 1])  # M_p: (N, 1, S / 2**p, S / 2**p)
                else:
                    # Direct Attention: the map, averaged down to this point's size, stands in for
                    # CAAN's features; with one channel, Eq. 2's channel mean is the map itself.
                    attention[point] = attention_map(F.interpolate(anomaly_map, size=x.shape[-2:], mode="area"))
                before[point], x = x, apply_attention(x, attention[point], self._gate_at(point))
            points.append(x)
        adn_logit = self.adn.head(x).squeeze(1)  # (N,)
        if not return_features:
            return adn_logit, caan_logit
        if not isinstance(self.attention_point, tuple):
            before, attention = before.get(self.attention_point), attention.get(self.attention_point)
        return adn_logit, caan_logit, {"points": points, "before": before, "attention": attention}

    def _gate_at(self, point):
        return None if self.gates is None else self.gates[self.attention_points.index(point)]

    def gate_weights(self):
        """{point: w_p} as floats. Without a learnable gate every w_p is 1: Eq. 3 is the gate held at 1."""
        if self.gates is None:
            return {point: 1.0 for point in self.attention_points}
        return dict(zip(self.attention_points, self.gates.detach().cpu().tolist()))

    def freeze_caan(self, frozen=True):
        """Stop (or restart) training the CAAN: no gradients, and eval mode even when the model trains.

        Eval mode keeps its BatchNorm on the statistics it learnt, so a frozen CAAN computes in
        training exactly what it computes at test time (``lea_tiny.two_stage`` uses this).
        """
        if self.caan is None:
            raise ValueError(f"variant {self.variant!r} has no CAAN to freeze")
        self.caan.requires_grad_(not frozen)
        self.caan_frozen = frozen
        return self.train(self.training)

    def train(self, mode=True):
        """``nn.Module.train``, except that a frozen CAAN (``freeze_caan``) stays in eval mode."""
        super().train(mode)
        if self.caan_frozen:
            self.caan.eval()
        return self

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
            check_unit_range(anomaly_map, "anomaly_map", fix="scale it with lea_tiny.maps.scale_maps")


def check_attention_point(variant, attention_point):
    """``attention_point`` checked for ``variant``: an int 1..5, a sorted tuple of distinct ones, or None."""
    if VARIANTS[variant].attention is None:
        if attention_point is not None:
            raise ValueError(f"variant {variant!r} has no attention point; got attention_point={attention_point!r}")
        return None
    several = isinstance(attention_point, (tuple, list))
    points = tuple(attention_point) if several else (attention_point,)
    if not points or any(not is_int(point) or point not in ATTENTION_POINTS for point in points):
        raise ValueError(f"variant {variant!r} needs attention_point in 1..5, or a non-empty tuple of them, "
                         f"got {attention_point!r}")
    if len(set(points)) != len(points):
        raise ValueError(f"attention_point must not repeat a point, got {attention_point!r}")
    return tuple(sorted(int(point) for point in points)) if several else int(attention_point)


def make_model(variant, adn="resnet18", attention_point=None, image_size=256, gate=False):
    """One row of Table 3: ``model(rgb, anomaly_map) -> (adn_logit, caan_logit or None)``.

    ``rgb`` is (N, 3, S, S) and ``anomaly_map`` (N, 1, S, S), already scaled for the networks
    (``maps.scale_maps``), both float32 in [0, 1]; the values are checked in eval mode.
    ``attention_point`` (1..5) is required by the attention variants and refused by the others; a
    tuple such as (1, 3) applies attention at each of its points (kept sorted). ``gate=True`` gives
    each point a learnable w_p starting at 0, f' = f + w_p * M_p * f, instead of Eq. 3's (1 + M) f.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if adn not in ADN_NAMES:
        raise ValueError(f"unknown ADN {adn!r}; choose one of {', '.join(ADN_NAMES)}")
    attention_point = check_attention_point(variant, attention_point)
    check_bool(gate, "gate")
    if gate and attention_point is None:
        raise ValueError(f"variant {variant!r} has no attention point to gate; gate=True needs one of "
                         f"{', '.join(ATTENTION_VARIANTS)}")
    check_image_size(image_size)
    return AnomalyDetector(variant, adn, attention_point, image_size, gate)
