"""The figures the demo and the tutorials share: images over their maps, and what attention does.

Every figure is a matplotlib ``Figure`` made without pyplot, so nothing appears until its caller
shows it: ``display(figure)`` in a notebook, ``figure.savefig(path)`` in the demo. A figure drawn
into a widget's output therefore appears there once, and not a second time below the cell.

Read top to bottom:
    attention_views   M_p and the ADN's features before and after Eq. 3, at each attention point
    maps_figure       images (lesions outlined) over their scaled colour anomaly maps
    attention_figure  a row per image and point: image, map, M_p, f_p before, after, and what Eq. 3 added
    points_figure     the paper's Fig. 5 for one image: M_p and the features before and after, point by point
"""

import torch
from matplotlib.figure import Figure


def attention_views(model, rgb, anomaly_maps):
    """What the attention of ``model`` does to a batch, at each of its attention points.

    rgb (N, 3, S, S) and anomaly_maps (N, 1, S, S) as the model reads them; the model runs once, in
    the mode it is in, without gradients. Returns {p: dict(attention=M_p (N, 1, h, w), before=f_p
    (N, C, h, w), after=the features passed on at p (N, C, h, w))}, float32 on the CPU, with one entry
    for ``attention_point=3`` and one per point for ``attention_point=(1, 3)``.
    """
    if not model.attention_points:
        raise ValueError(f"variant {model.variant!r} has no attention point to look at")
    device = next(model.parameters()).device
    with torch.no_grad():
        _, _, features = model(rgb.to(device), anomaly_maps.to(device), return_features=True)
    before, attention = features["before"], features["attention"]
    if not isinstance(model.attention_point, tuple):  # one point: the model returns tensors, not {p: tensor}
        before, attention = {model.attention_point: before}, {model.attention_point: attention}
    return {point: dict(attention=attention[point].float().cpu(), before=before[point].float().cpu(),
                        after=features["points"][point - 1].float().cpu())
            for point in model.attention_points}


# Panels ------------------------------------------------------------------------------------------------
def _panel(axis, picture, title, **imshow_options):
    shown = axis.imshow(picture.numpy(), **imshow_options)
    axis.set_title(title, fontsize=9)
    axis.axis("off")
    return shown


def _outline(axis, data, index, size):
    """The true lesion of image ``index`` outlined in cyan over a picture of ``size`` x ``size`` cells."""
    if data.masks is not None and data.masks[index].any():
        axis.contour(data.masks[index].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.7, origin="upper",
                     extent=(-0.5, size - 0.5, size - 0.5, -0.5))


def _image(axis, data, index, title=None):
    kind = "anomalous" if data.labels[index] else "normal"
    _panel(axis, data.images[index].permute(1, 2, 0), kind if title is None else f"{title}: {kind}")
    _outline(axis, data, index, data.image_size)


def _map(axis, scaled_map):
    _panel(axis, scaled_map, "scaled map", cmap="inferno", vmin=0, vmax=1)


# Figures -------------------------------------------------------------------------------------------------
def maps_figure(data, anomaly_maps, shown=None, title=None):
    """Images of ``data`` (an ``AnomalyDataset``) over their scaled maps, lesions outlined where masks are known.

    anomaly_maps: (N, 1, H, W) in [0, 1], as ``maps.scale_maps`` gives, one per image of ``data``;
    shown: the indices of the images to draw, one column each (default: all).
    """
    shown = list(range(len(data))) if shown is None else list(shown)
    figure = Figure(figsize=(1.6 * len(shown), 3.6), layout="constrained")
    axes = figure.subplots(2, len(shown), squeeze=False)
    for column, index in enumerate(shown):
        _image(axes[0, column], data, index)
        _map(axes[1, column], anomaly_maps[index, 0])
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def attention_figure(data, anomaly_maps, views, shown, title=None):
    """One row per shown image and attention point: what Eq. 2 and Eq. 3 do there.

    The row: the image (lesion outlined), its scaled map, M_p (on 0..1), the channel mean of the ADN's
    features f_p before and after Eq. 3 (on one scale, so that the boost shows), and their difference,
    the part the attention added (M_p f_p, or w_p M_p f_p with a gate). ``views`` comes from
    ``attention_views`` on the images of ``data`` and ``anomaly_maps``; ``shown`` indexes them.
    """
    rows = [(index, point) for index in shown for point in views]
    figure = Figure(figsize=(13, 2.5 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), 6, squeeze=False)
    for (index, point), row in zip(rows, axes):
        view = views[point]
        attention = view["attention"][index, 0]
        before, after = view["before"][index].mean(dim=0), view["after"][index].mean(dim=0)
        _image(row[0], data, index, f"image {index}")
        _map(row[1], anomaly_maps[index, 0])
        attention_shown = _panel(row[2], attention, f"M_{point}: {attention.min():.2f} .. {attention.max():.2f}",
                                 cmap="inferno", vmin=0, vmax=1)
        scale = dict(cmap="viridis", vmin=float(min(before.min(), after.min())),
                     vmax=float(max(before.max(), after.max())))
        _panel(row[3], before, f"f_{point} {tuple(view['before'].shape[1:])}, before", **scale)
        _panel(row[4], after, f"(1 + M_{point}) f_{point}, after", **scale)
        _panel(row[5], after - before, "after - before: added", cmap="viridis")
        _outline(row[5], data, index, attention.shape[-1])
    figure.colorbar(attention_shown, ax=axes[:, 2], shrink=0.8, label="M")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def points_figure(data, anomaly_maps, views, index, title=None):
    """The paper's Fig. 5 for image ``index``: the image, its map and mask, then a column per attention point.

    Each point's column: M_p (on 0..1), and the channel mean of the ADN's features before and after
    Eq. 3, each on its own scale from 0 (the features come out of ReLUs). ``views`` is {p: one view of
    ``attention_views``}, so each point may come from its own model (one model per point, as the paper).
    """
    figure = Figure(figsize=(2.1 * (1 + len(views)), 6.6), layout="constrained")
    axes = figure.subplots(3, 1 + len(views), squeeze=False)
    _image(axes[0, 0], data, index)
    _map(axes[1, 0], anomaly_maps[index, 0])
    axes[2, 0].axis("off")
    if data.masks is not None:
        _panel(axes[2, 0], data.masks[index], "true mask", cmap="gray", vmin=0, vmax=1)
    for column, (point, view) in enumerate(views.items(), start=1):
        attention = view["attention"][index, 0]
        attention_shown = _panel(axes[0, column], attention, f"M_{point}: {attention.min():.2f}..{attention.max():.2f}",
                                 cmap="inferno", vmin=0, vmax=1)
        _panel(axes[1, column], view["before"][index].mean(dim=0), f"f_{point} before", cmap="viridis", vmin=0)
        _panel(axes[2, column], view["after"][index].mean(dim=0), f"(1 + M_{point}) f_{point} after", cmap="viridis",
               vmin=0)
    figure.colorbar(attention_shown, ax=axes[0, :], shrink=0.8, label="M")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
