"""Two-stage training: the CAAN first, from the maps alone; then the ADN with it.

Eq. 1 trains the two networks together from the first step, so in the first epochs the ADN is
steered by the attention of an untrained CAAN. With the learnable gate of Hayakawa et al.
("Layer-wise External Attention for Efficient Deep Anomaly Detection", IMPROVE 2023;
``make_model(..., gate=True)``) the opposite happens: while every w_p is 0 the ADN's loss sends the
CAAN no gradient. Training in two stages gives the CAAN its own job first:

    stage 1   the CAAN alone, on its own head:     min BCE(CAAN(map), y)
    stage 2   the ADN with that CAAN (``fit``):
              caan="frozen"      the CAAN's weights stay as stage 1 left them; min BCE(ADN, y)
              caan="fine_tune"   both keep learning on Eq. 1, BCE(ADN) + BCE(CAAN)

This is lea_tiny's reading. Whether the follow-ups (Hayakawa et al. 2023; Nakanishi et al.,
"Layer-Wise External Attention by Well-Localized Attention Map for Efficient Deep Anomaly
Detection", SN Computer Science 2024) train in two stages, and if so with the CAAN frozen or
fine-tuned, cannot be told from their abstracts; both are offered, and neither is the default of
anything else in lea_tiny.

What lea_tiny chooses:
- Stage 1 uses Adam at ``CAAN_LR`` = 1e-4, Section 4-2's rate for the non-VGG networks (the CAAN is
  a ResNet or a MobileNet), batches and symmetries drawn as ``fit`` draws them.
- A frozen CAAN also stays in eval mode during stage 2 (``AnomalyDetector.freeze_caan``): its
  BatchNorm keeps the statistics of stage 1, so it computes the attention it will compute at test
  time. Its loss still appears in stage 2's history, as a report: no gradient reaches it.
"""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lea_tiny import autocast, get_device, seed_everything, to_device
from lea_tiny.checks import (check_bool, check_both_classes, check_images, check_int, check_labels, check_lr,
                             check_model_inputs)
from lea_tiny.train import DIHEDRAL_TRANSFORMS, dihedral, fit

CAAN_LR = 1e-4
CAAN_MODES = ("frozen", "fine_tune")


def _check_caan_inputs(model, anomaly_maps, labels):
    if getattr(model, "caan", None) is None:
        raise ValueError("model must be a LEA-Net with a CAAN: make_model('caan_resnet' or 'caan_mobilenet', ...)")
    size = model.image_size
    is_tensor = isinstance(anomaly_maps, torch.Tensor)
    if not is_tensor or anomaly_maps.ndim != 4 or tuple(anomaly_maps.shape[1:]) != (1, size, size):
        shape = tuple(anomaly_maps.shape) if is_tensor else type(anomaly_maps).__name__
        raise ValueError(f"anomaly_maps must have shape (N, 1, {size}, {size}) for this model, got {shape}")
    check_images(anomaly_maps, "anomaly_maps", channels=1, fix="scale them with lea_tiny.maps.scale_maps")
    labels = check_labels(labels, anomaly_maps.shape[0])
    check_both_classes(labels, "the training labels")
    return labels


# Stage 1 -------------------------------------------------------------------------------------------
def train_caan(model, anomaly_maps, labels, *, epochs, lr=CAAN_LR, batch_size=16, augment=False, device=None,
               seed=0, progress=True):
    """Train ``model.caan`` alone on its own head: BCE(CAAN(map), label). Returns dict(caan_loss=[...]).

    anomaly_maps (N, 1, S, S) scaled to [0, 1]; labels (N,) 0 / 1, both present. Adam(``lr``), the
    batches reshuffled every epoch by a generator seeded with ``seed``; ``augment=True`` shows each
    batch under one of the eight ``dihedral`` symmetries, as ``fit`` does. Only the CAAN moves; it
    ends in eval mode on ``device``, and the losses are epoch means.
    """
    labels = _check_caan_inputs(model, anomaly_maps, labels)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)  # BatchNorm trains on 2 maps or more
    check_lr(lr)
    check_bool(augment, "augment")

    device = get_device(device)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    caan = to_device(model.caan, device)
    maps = anomaly_maps.to(device, torch.float32)
    if device.type == "cuda":
        maps = maps.contiguous(memory_format=torch.channels_last)
    targets = labels.float().to(device)
    optimizer = torch.optim.Adam(caan.parameters(), lr=lr or CAAN_LR, fused=True)

    history = dict(caan_loss=[])
    caan.train()
    for _ in tqdm(range(epochs), desc="stage 1: CAAN", disable=not progress, leave=False):
        order = torch.randperm(len(targets), generator=generator).to(device)
        total, seen = torch.zeros((), device=device), 0
        for start in range(0, len(targets), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) == 1:  # BatchNorm cannot train on one map; it waits for another shuffle
                continue
            map_batch = maps[batch]
            if augment:
                map_batch = dihedral(map_batch, int(torch.randint(DIHEDRAL_TRANSFORMS, (), generator=generator)))
            with autocast(device):
                logit, _ = caan(map_batch)
            loss = F.binary_cross_entropy_with_logits(logit.float(), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
            seen += len(batch)
        history["caan_loss"].append(total.item() / seen)
    caan.eval()
    return history


# Both stages ---------------------------------------------------------------------------------------
def fit_two_stage(model, images, anomaly_maps, labels, *, caan="frozen", caan_epochs, epochs, caan_lr=CAAN_LR,
                  lr=None, batch_size=16, augment=False, device=None, seed=0, progress=True):
    """Stage 1 (``train_caan`` for ``caan_epochs``), then stage 2 (``fit`` for ``epochs``) with the CAAN ``caan``.

    ``caan="frozen"``: stage 2 trains everything but the CAAN, which stays in eval mode with stage 1's
    weights (BatchNorm statistics included); the model comes back unfrozen. ``caan="fine_tune"``:
    stage 2 is plain ``fit`` on Eq. 1, starting from stage 1's CAAN. ``lr`` is stage 2's (None: the
    paper's for the ADN), ``caan_lr`` stage 1's; the other arguments go to both stages, and every
    argument is checked before either trains. Returns dict(stage_one=train_caan's history,
    stage_two=fit's history); the model ends in eval mode on ``device``.
    """
    if caan not in CAAN_MODES:
        raise ValueError(f"caan must be one of {', '.join(map(repr, CAAN_MODES))}, got {caan!r}")
    labels = check_model_inputs(model, images, anomaly_maps, labels)
    _check_caan_inputs(model, anomaly_maps, labels)
    check_int(caan_epochs, "caan_epochs", 1)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)
    check_lr(caan_lr)
    check_lr(lr)
    check_bool(augment, "augment")

    shared = dict(batch_size=batch_size, augment=augment, device=device, seed=seed, progress=progress)
    stage_one = train_caan(model, anomaly_maps, labels, epochs=caan_epochs, lr=caan_lr, **shared)
    model.freeze_caan(caan == "frozen")
    try:
        stage_two = fit(model, images, anomaly_maps, labels, epochs=epochs, lr=lr, **shared)
    finally:
        model.freeze_caan(False)
    return dict(stage_one=stage_one, stage_two=stage_two)
