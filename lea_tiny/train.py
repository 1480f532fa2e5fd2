"""Section 4 of the paper: training LEA-Net and measuring one model (Eq. 1, Section 4-2).

LEA-Net learns its two networks together. The anomaly detection network (ADN) reads the RGB image
and the colour anomaly attention network (CAAN) reads the colour anomaly map; both end in one
logit "is this image anomalous?", and the loss is the sum of their binary cross-entropies (Eq. 1).
The CAAN's loss is what teaches it to make attention maps that point at anomalies. Section 4-2 fixes
the rest: Adam, learning rate 1e-4 for ResNet18 and 1e-5 for VGG16, batch 16, 100 epochs, no
augmentation. Cross-validation and Table 3 are in ``lea_tiny.ablation``.

Read top to bottom:
    default_lr        the paper's learning rate for an ADN
    joint_loss        Eq. 1: BCE(ADN) + BCE(CAAN)
    dihedral          the eight symmetries of the square, lea_tiny's augmentation
    fit               Adam over the data for some epochs; the last epoch's weights are kept
    evaluate          F1 of the anomalous class at 0.5 and image AUROC, for the ADN and the CAAN's head
    save_checkpoint / load_checkpoint

Where lea_tiny departs from the paper or the released code (``docs/released_code.md``):
- Each network ends in one logit and a sigmoid, the "BCE" of Eq. 1. The released code ends in two
  softmax outputs; for two classes the two are the same model written twice (the softmax of two
  logits is the sigmoid of their difference), and argmax equals "sigmoid > 0.5". The 0.5 threshold
  is therefore the released code's (the paper names no threshold).
- ``fit(augment=True)`` adds what the paper leaves out: the eight dihedral symmetries, per batch.
  Without them, at teaching scale, every RGB classifier memorises its training images (see
  ``dihedral``); ``augment=False`` stays the default of ``fit``, the paper's protocol.
- Besides F1 we report the image AUROC. F1 at the fixed threshold 0.5 depends on calibration: on a
  small imbalanced fold a classifier that ranks images well can still score F1 = 0 if it never
  crosses 0.5. AUROC measures the ranking alone, so it tells "learnt nothing" from "badly calibrated".
  ``evaluate`` scores the CAAN's own head too: it reads only the map, so it shows what the map
  knows, and whether the ADN's output carries it.
"""

import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score
from tqdm.auto import tqdm

from lea_tiny import autocast, get_device, seed_everything, to_device
from lea_tiny.adn import ADN_NAMES
from lea_tiny.attention import make_model
from lea_tiny.checks import (check_bool, check_both_classes, check_int, check_lr, check_model, check_model_inputs,
                             check_seed, is_int)

CHECKPOINT_FORMAT = "lea_tiny checkpoint 1"


# Section 4-2 ------------------------------------------------------------------------------------
def default_lr(adn_name):
    """The paper's Adam learning rate for an ADN (Section 4-2): 1e-5 for the VGGs, 1e-4 for the others."""
    if adn_name not in ADN_NAMES:
        raise ValueError(f"unknown ADN {adn_name!r}; expected one of {sorted(ADN_NAMES)}")
    return ADN_NAMES[adn_name].lr


def joint_loss(adn_logit, caan_logit, labels):
    """Eq. 1: L = BCE(CAAN) + BCE(ADN), equal weights. Returns (loss, adn_loss, caan_loss).

    Models without a CAAN (``caan_logit is None``) train on the ADN's loss alone; their
    ``caan_loss`` is None. Logits are taken in float32 even when the forward pass ran in bf16.
    """
    targets = labels.float()
    adn_loss = F.binary_cross_entropy_with_logits(adn_logit.float(), targets)
    if caan_logit is None:
        return adn_loss, adn_loss, None
    caan_loss = F.binary_cross_entropy_with_logits(caan_logit.float(), targets)
    return adn_loss + caan_loss, adn_loss, caan_loss


def _on_device(device, images, anomaly_maps):
    """The data as one tensor each on the device; channels_last on CUDA, where convolutions prefer it."""
    images, anomaly_maps = images.to(device, torch.float32), anomaly_maps.to(device, torch.float32)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
        anomaly_maps = anomaly_maps.contiguous(memory_format=torch.channels_last)
    return images, anomaly_maps


# Augmentation -------------------------------------------------------------------------------------
# The paper trains "without data augmentation". On a few dozen images that lets an RGB classifier
# memorise its training set (training AUROC 1, held-out AUROC at chance: tutorial 07 shows both
# curves). A fundus patch or a leaf has no preferred orientation, so the eight symmetries of the
# square (the dihedral group D4: four rotations, each with or without a mirror) give eight views
# of every image that are all equally "normal" or "anomalous". The image and its map move together.
DIHEDRAL_TRANSFORMS = 8


def dihedral(tensor, transform):
    """Symmetry ``transform`` (0..7) of the square applied to the last two axes of ``tensor``.

    transform = 4 * mirror + quarter_turns: rotate by quarter_turns * 90 degrees, then mirror left-right
    if ``mirror``. 0 is the identity; every one of the eight is different for a square image.
    """
    mirror, quarter_turns = divmod(transform, 4)
    tensor = torch.rot90(tensor, quarter_turns, dims=(-2, -1))
    return tensor.flip(-1) if mirror else tensor


def fit(model, images, anomaly_maps, labels, *, epochs, lr=None, batch_size=16, augment=False, device=None, seed=0,
        progress=True, compile=False, on_epoch_end=None):
    """Train ``model`` (from ``make_model``) on the joint loss of Eq. 1; return the per-epoch losses.

    images (N, 3, H, W) in [0, 1]; anomaly_maps (N, 1, H, W) scaled to [0, 1] (``scale_maps``);
    labels (N,) 0 = normal, 1 = anomalous, both present. Adam with ``lr`` (None: the paper's,
    ``default_lr(model.adn_name)``), ``batch_size`` images per step, reshuffled every epoch by a
    torch.Generator seeded with ``seed``; no early stopping, so the last epoch's weights are kept,
    as in the paper. ``augment=False`` is the paper's protocol; ``augment=True`` shows each batch
    under one of the eight ``dihedral`` symmetries, drawn per batch from the same generator, the
    same one for the images and their maps (the teaching configurations use it: see above). A batch
    of a single image is skipped (BatchNorm cannot train on one); that image waits for another
    epoch's shuffle.

    ``seed`` (an int in 0..2**32 - 1) covers exactly what ``fit`` draws: the batch order, the
    symmetries drawn and dropout (through ``seed_everything(seed)``, which also re-seeds Python's,
    NumPy's and torch's global generators). It does not cover the model's initial weights, drawn when
    the model was built: for a repeatable run call ``seed_everything`` before ``make_model``, as
    ``cross_validate`` does. Same seed and same initial weights: the same history on the CPU.
    ``on_epoch_end(epoch, model)``, if given, is called after every epoch with the model in eval mode
    (e.g. to record held-out AUROC per epoch, as tutorial 07 does); it must not change the weights.

    The data lives on the device as one tensor (small datasets; no DataLoader). On CUDA the model
    runs in bf16 autocast and channels_last; ``compile=True`` trains through ``torch.compile``.
    Returns dict(loss=[...], adn_loss=[...], caan_loss=[...]) of epoch means (``caan_loss`` stays
    empty for models without a CAAN), and leaves the model on ``device`` in eval mode.
    """
    labels = check_both_classes(check_model_inputs(model, images, anomaly_maps, labels), "the training labels")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)  # BatchNorm trains on 2 images or more
    check_lr(lr)
    check_bool(augment, "augment")
    check_bool(compile, "compile")
    check_seed(seed)

    device = get_device(device)
    seed_everything(seed)  # dropout, where a model has it
    generator = torch.Generator().manual_seed(seed)
    to_device(model, device)
    step_model = torch.compile(model) if compile else model
    # fused: one kernel for the whole update instead of a loop over tensors (6x faster for the CNN on a CPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr or default_lr(model.adn_name), fused=True)
    images, anomaly_maps = _on_device(device, images, anomaly_maps)
    labels = labels.to(device)

    history = dict(loss=[], adn_loss=[], caan_loss=[])
    model.train()
    bar = tqdm(range(epochs), desc=f"training {model.variant}", disable=not progress, leave=False)
    for epoch in bar:
        epoch_means = _train_one_epoch(step_model, optimizer, images, anomaly_maps, labels, batch_size, augment,
                                       generator)
        for name, mean in epoch_means.items():
            history[name].append(mean)
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
        if on_epoch_end is not None:
            model.eval()
            on_epoch_end(epoch, model)
            model.train()
    model.eval()
    return history


def _train_one_epoch(step_model, optimizer, images, anomaly_maps, labels, batch_size, augment, generator):
    """One shuffled pass of Adam steps on Eq. 1; returns the epoch means {"loss": ..., "adn_loss": ..., ...}."""
    device = images.device
    order = torch.randperm(len(labels), generator=generator).to(device)
    totals, seen = {}, 0  # sums stay on the device: one sync per epoch, not one per step
    for start in range(0, len(labels), batch_size):
        batch = order[start:start + batch_size]
        if len(batch) == 1:
            continue
        image_batch, map_batch = images[batch], anomaly_maps[batch]
        if augment:
            transform = int(torch.randint(DIHEDRAL_TRANSFORMS, (), generator=generator))
            image_batch, map_batch = dihedral(image_batch, transform), dihedral(map_batch, transform)
        with autocast(device):
            adn_logit, caan_logit = step_model(image_batch, map_batch)
        loss, adn_loss, caan_loss = joint_loss(adn_logit, caan_logit, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in (("loss", loss), ("adn_loss", adn_loss), ("caan_loss", caan_loss)):
            if value is not None:
                totals[name] = totals.get(name, 0) + value.detach() * len(batch)
        seen += len(batch)
    return {name: total.item() / seen for name, total in totals.items()}


# The paper's metric, F1, at the released code's threshold 0.5; and AUROC ---------------------------------
def anomaly_scores(model, images, anomaly_maps, batch_size=64):
    """sigmoid of the ADN's and of the CAAN's logit per image: two (N,) float32 tensors on the CPU.

    The ADN's is the model's probability of "anomalous"; the CAAN's (None for models without a
    CAAN) is what its head alone, reading only the map, says. Runs the model as it is (call
    ``model.eval()`` first), on the model's device, batch by batch.
    """
    device = next(model.parameters()).device
    images, anomaly_maps = _on_device(device, images, anomaly_maps)
    adn_scores, caan_scores = [], []
    # no_grad rather than inference_mode: the scores stay ordinary tensors that can be changed in place
    with torch.no_grad(), autocast(device):
        for image_batch, map_batch in zip(images.split(batch_size), anomaly_maps.split(batch_size)):
            adn_logit, caan_logit = model(image_batch, map_batch)
            adn_scores.append(torch.sigmoid(adn_logit.float()))
            if caan_logit is not None:
                caan_scores.append(torch.sigmoid(caan_logit.float()))
    return torch.cat(adn_scores).cpu(), torch.cat(caan_scores).cpu() if caan_scores else None


def f1_and_auroc(scores, labels, threshold=0.5):
    """F1 of the anomalous class at ``scores > threshold`` (``zero_division=0``) and the AUROC of ``scores``."""
    truth = torch.as_tensor(labels).cpu().numpy()
    scores = torch.as_tensor(scores).cpu().numpy()
    return dict(f1=float(f1_score(truth, scores > threshold, zero_division=0)),
                auroc=float(roc_auc_score(truth, scores)))


def evaluate(model, images, anomaly_maps, labels, device=None):
    """F1 of the anomalous class at threshold 0.5 and image AUROC, of the ADN and of the CAAN's head.

    An image counts as anomalous when sigmoid(ADN logit) > 0.5, the argmax of the released code's
    two softmax outputs. F1 with ``zero_division=0`` (no anomaly predicted and none present: 0).
    The labels must hold both classes, since AUROC needs them. Returns dict(f1=float, auroc=float,
    scores=(N,) tensor of sigmoid(ADN logit)) and, for a model with a CAAN, caan_f1, caan_auroc and
    caan_scores measured the same way on its own head. The model ends in eval mode on ``device``.
    """
    labels = check_model_inputs(model, images, anomaly_maps, labels)
    check_both_classes(labels, "the evaluation labels (AUROC needs both classes)")
    model.to(get_device(device)).eval()
    adn_scores, caan_scores = anomaly_scores(model, images, anomaly_maps)
    result = dict(f1_and_auroc(adn_scores, labels), scores=adn_scores)
    if caan_scores is not None:
        caan = f1_and_auroc(caan_scores, labels)
        result.update(caan_f1=caan["f1"], caan_auroc=caan["auroc"], caan_scores=caan_scores)
    return result


# Checkpoints ----------------------------------------------------------------------------------------------
def write_atomically(path, write):
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file.

    The file gets the permissions any new file would (mkstemp's own are 0600, owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_checkpoint(path, model, config):
    """Save ``model``'s weights and ``config`` to ``path`` atomically; ``load_checkpoint`` rebuilds it.

    ``config`` is a dict of plain values (str, int, float, bool, None, lists, dicts) and must hold
    ``image_size``, the model's own; add what else the model needs to be used (e.g. the map
    ``scale``). The model's variant, ADN and attention point (an int, or a tuple for several), and
    ``gate`` when it has one, are added from the model itself.
    """
    check_model(model)
    if not isinstance(config, dict) or "image_size" not in config:
        raise ValueError("config must be a dict holding at least 'image_size' (the model's input size)")
    if not is_int(config["image_size"]) or config["image_size"] != model.image_size:
        raise ValueError(f"config['image_size'] is {config['image_size']!r} but the model takes "
                         f"{model.image_size} px images; load_checkpoint would build the wrong model")
    config = dict(config, variant=model.variant, adn=model.adn_name, attention_point=model.attention_point)
    if model.gate:  # only when set: a checkpoint without the gate reads as it did before the gate existed
        config["gate"] = True
    try:
        json.dumps(config)
    except TypeError as error:
        raise ValueError(f"config must hold plain values only (str, numbers, None, lists, dicts): {error}") from error
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    checkpoint = dict(format=CHECKPOINT_FORMAT, config=config, state_dict=state)
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def load_checkpoint(path, device=None):
    """Rebuild the model saved at ``path`` on ``device``, in eval mode; returns (model, config).

    Loads with ``weights_only=True``: a checkpoint can hold tensors and plain values, never code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format is {checkpoint.get('format')!r}")
        config = checkpoint["config"]
        model = make_model(config["variant"], adn=config["adn"], attention_point=config["attention_point"],
                           image_size=config["image_size"], gate=config.get("gate", False))
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as error:
        raise ValueError(f"{path} is not a readable lea_tiny checkpoint: {error}") from error
    return model.to(get_device(device)).eval(), config
