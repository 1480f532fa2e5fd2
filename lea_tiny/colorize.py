"""Step (a) of LEA-Net: the colour anomaly map (Section 3-1, Table 9).

A U-Net learns, from normal images only, to predict an image's colour (a*, b*) from its
lightness (L*). On a normal image it re-colours well; where an image carries a colour it has
never seen with that lightness and texture (a lesion, a stain), the prediction is wrong there.
The CIEDE2000 difference between an image and its re-colouring, pixel by pixel, is the
*colour anomaly map* that the rest of LEA-Net reads.

What the U-Net sees (same scaling as the released code):
    input   L* / 100                            in [0, 1], shape (N, 1, H, W)
    output  (a* + 128) / 255, (b* + 128) / 255  in (0, 1) through a sigmoid, shape (N, 2, H, W)
so a prediction covers a*, b* in (-128, 127), wider than the sRGB gamut (about -86..98 for a*,
-108..95 for b*).

Read top to bottom:
    fancy_pca           the colour augmentation used while training (Krizhevsky et al. 2012)
    UNet                Table 9, with log2(image_size) down-samplings so 64 px works too
    train_colorizer     MSE on scaled a*b*, Adam(1e-3, betas 0.9/0.999), early stopping
    colorize            the input's L* with predicted a*b*, as RGB
    anomaly_map         CIEDE2000(input, re-colouring) on true L*a*b*
Which colouriser maps which image without leakage, and how maps are scaled for the networks, is
``lea_tiny.maps``: it holds for any map source, not only for colour.

Where lea_tiny departs from the released code (docs/released_code.md describes it):
- The map is CIEDE2000 on true L*a*b*. The released code converts its (already L*a*b*) arrays
  "from RGB to Lab" a second time before CIEDE2000, which gives a different map
  (tutorial 04 measures how different).
- Early stopping watches a held-out part of the normal images (``val_fraction``); the released
  code watches the training loss. ``val_fraction=0`` gives the released behaviour.
- The last layer starts with zero weights and the bias of the training images' mean a*b*, so
  the untrained colouriser paints every pixel in the average normal colour. The paper's up to 500
  epochs find that colour anyway; the few epochs of a teaching run would spend themselves on it.
- No dropout in the decoder: Table 9 lists none. (The released code puts dropout 0.5 on the
  first three decoder stages, pix2pix's noise source for its GAN; this colouriser has no GAN.)
"""

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lea_tiny import autocast, get_device, seed_everything, to_device
from lea_tiny.checks import check_images, check_int, check_number, check_seed, check_trained_network
from lea_tiny.ciede import ciede2000, lab_to_rgb, rgb_to_lab, rgb_to_lab_unchecked

L_SCALE = 100.0
AB_OFFSET = 128.0
AB_SCALE = 255.0
FANCY_PCA_ALPHA = 0.08  # the released code's value (Krizhevsky et al. used 0.1)
VAL_FRACTION = 0.2  # of the normal images, held out to stop a colouriser's training early


# Fancy PCA (Krizhevsky et al. 2012, Section 4.1) ---------------------------------------------
def fancy_pca(rgb, alpha=FANCY_PCA_ALPHA, generator=None):
    """Shift every pixel of each image along its own colour principal components.

    For each image: the 3x3 covariance of its RGB pixels has eigenvectors ``P`` and eigenvalues
    ``lam``; draw ``a ~ N(0, alpha^2)`` per component and add ``P @ (a * lam)`` to every pixel,
    then clip to [0, 1]. The paper uses it because re-colouring fails on very bright or dark
    images. The eigenvalues are variances of values in [0, 1], often below 0.01 for a photograph,
    so at ``alpha=0.08`` (the released code's value) the shift is a fraction of a grey level;
    raise ``alpha`` to see it (tutorial 03).

    rgb: (N, 3, H, W) in [0, 1], any device. generator: a torch.Generator for reproducible draws
    (on any device; the draws are moved to ``rgb.device``). Returns a new (N, 3, H, W) tensor.
    """
    check_images(rgb, "rgb")
    return _fancy_pca(rgb, check_number(alpha, "alpha", at_least=0), generator)


def _fancy_pca(rgb, alpha, generator):
    pixels = rgb.flatten(2)
    centred = pixels - pixels.mean(dim=2, keepdim=True)
    covariance = centred @ centred.transpose(1, 2) / max(pixels.shape[2] - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # columns of eigenvectors
    draw_device = generator.device if generator is not None else rgb.device
    draws = torch.randn(rgb.shape[0], 3, generator=generator, device=draw_device).to(rgb.device)
    shift = eigenvectors @ (alpha * draws * eigenvalues).unsqueeze(-1)  # (N, 3, 1)
    return (rgb + shift.unsqueeze(-1)).clamp(0.0, 1.0)


# U-Net (Table 9) ------------------------------------------------------------------------------
def down_block(in_channels, out_channels, batch_norm):
    layers = [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def up_block(in_channels, out_channels):
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """The colouriser of Table 9: scaled L* (N, 1, S, S) -> scaled a*b* (N, 2, S, S).

    Encoder: log2(S) stages of [4x4 conv, stride 2 -> BatchNorm (not on the first) -> LeakyReLU 0.2]
    with 64, 128, 256, 512, 512, ... channels, down to 1x1 (8 stages at S = 256, as in Table 9).
    Decoder: mirror stages of [2x2 transposed conv, stride 2 -> BatchNorm -> ReLU], each followed by
    concatenation with the encoder output of the same size; a last 2x2 transposed conv to 2
    channels and a sigmoid (no BatchNorm). Ranges: see the module docstring.
    """

    def __init__(self, image_size=256):
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16 \
                or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {image_size!r}")
        self.image_size = image_size
        depth = image_size.bit_length() - 1  # log2: down-sample all the way to 1x1
        widths = [min(64 * 2**stage, 512) for stage in range(depth)]
        self.encoder = nn.ModuleList(
            down_block(1 if stage == 0 else widths[stage - 1], widths[stage], batch_norm=stage > 0)
            for stage in range(depth)
        )
        # Decoder stage i up-samples to the size of encoder stage i; its input is the previous
        # concatenation (twice the width) except at the bottleneck.
        self.decoder = nn.ModuleList(
            up_block(widths[stage + 1] * (1 if stage == depth - 2 else 2), widths[stage])
            for stage in reversed(range(depth - 1))
        )
        self.head = nn.ConvTranspose2d(2 * widths[0], 2, 2, stride=2)

    def forward(self, lightness):
        expected = (1, self.image_size, self.image_size)
        if lightness.ndim != 4 or tuple(lightness.shape[1:]) != expected:
            raise ValueError(f"UNet({self.image_size}) expects scaled L* of shape (N, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}), got {tuple(lightness.shape)}")
        skips = []
        x = lightness  # (N, 1, S, S)
        for stage in self.encoder:
            x = stage(x)  # stage i: (N, widths[i], S / 2**(i+1), S / 2**(i+1)), down to (N, 512, 1, 1)
            skips.append(x)
        skips.pop()  # the 1x1 bottleneck is x itself
        for stage in self.decoder:
            x = torch.cat([skips.pop(), stage(x)], dim=1)  # up to stage i's size, (N, 2 * widths[i], ...)
        return torch.sigmoid(self.head(x))  # (N, 2, S, S)


# Between L*a*b* and what the U-Net reads and writes --------------------------------------------
def _unet_input(lab):
    return lab[:, :1] / L_SCALE


def _unet_target(lab):
    return (lab[:, 1:] + AB_OFFSET) / AB_SCALE


def _predicted_chroma(unet, lab):
    """The U-Net's scaled a*b* for the L* of ``lab``, in float32 (computed in bf16 on CUDA)."""
    with autocast(lab.device):
        return unet(_unet_input(lab)).float()


def chroma_loss(unet, lab):
    """MSE between predicted and true scaled a*b*: the colouriser's training loss."""
    return F.mse_loss(_predicted_chroma(unet, lab), _unet_target(lab))


def _recolored_lab(unet, lab):
    """The input's own L* with the U-Net's a*b*, in float32 L*a*b*."""
    return torch.cat([lab[:, :1], _predicted_chroma(unet, lab) * AB_SCALE - AB_OFFSET], dim=1)


# Training (Section 4-2) --------------------------------------------------------------------------
def _start_at_mean_colour(unet, images, batch_size):
    """Make the untrained U-Net predict the images' mean a*b* everywhere: zero last-layer weights,
    bias = logit(mean scaled a*b*). Training then spends its first epochs on what varies around
    the mean colour instead of on finding it, which matters when there are only a few epochs."""
    with torch.no_grad():
        total = sum(_unet_target(rgb_to_lab(batch)).sum(dim=(0, 2, 3)) for batch in images.split(batch_size))
        unet.head.weight.zero_()
        unet.head.bias.copy_(torch.logit(total / (len(images) * images[0, 0].numel())))


def _validation_count(count, val_fraction):
    """How many of ``count`` normal images ``train_colorizer`` holds out to watch for early stopping."""
    return max(1, round(val_fraction * count)) if val_fraction > 0 else 0


def fewest_normals_to_train(val_fraction=VAL_FRACTION):
    """The fewest normal images ``train_colorizer`` accepts: 2 to train on (BatchNorm) besides those it
    holds out (``val_fraction``), so 3 by default."""
    return next(count for count in itertools.count(2) if count - _validation_count(count, val_fraction) >= 2)


def _check_colorizer_training(normal_images, epochs, batch_size, lr, val_fraction, patience, seed):
    """train_colorizer's arguments checked before any training; returns how many images it validates on."""
    check_images(normal_images, "normal_images")
    if normal_images.shape[2] != normal_images.shape[3]:
        raise ValueError(f"normal_images must be square, got {normal_images.shape[2]}x{normal_images.shape[3]}")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)  # BatchNorm at the 1x1 bottleneck needs 2
    check_int(patience, "patience", 1)
    check_number(lr, "lr", above=0)
    check_number(val_fraction, "val_fraction", at_least=0, below=1)
    check_seed(seed)
    count = normal_images.shape[0]
    val_count = _validation_count(count, val_fraction)
    if count - val_count < 2:
        raise ValueError(f"train_colorizer needs at least 2 training images after holding out "
                         f"{val_count} for validation, got {count} normal images")
    return val_count


def _train_one_epoch(unet, optimizer, train_images, batch_size, generator):
    """One pass over the shuffled training images, each batch under a fresh Fancy PCA draw; the mean loss."""
    unet.train()
    shuffled = torch.randperm(len(train_images), generator=generator).to(train_images.device)
    total, seen = torch.zeros((), device=train_images.device), 0
    # Stop one short of the end so that no batch holds a single image (BatchNorm needs 2);
    # a lone last image simply waits for another epoch's shuffle.
    for start in range(0, len(train_images) - 1, batch_size):
        batch = _fancy_pca(train_images[shuffled[start:start + batch_size]], FANCY_PCA_ALPHA, generator)
        loss = chroma_loss(unet, rgb_to_lab_unchecked(batch))  # the images were checked once, before training
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(batch)
        seen += len(batch)
    return total.item() / seen


def _validation_loss(unet, val_lab, batch_size):
    """The mean loss on the held-out images, in eval mode: what early stopping watches."""
    unet.eval()
    with torch.no_grad():
        return sum(chroma_loss(unet, lab) * len(lab) for lab in val_lab.split(batch_size)).item() / len(val_lab)


def train_colorizer(normal_images, epochs, batch_size=16, lr=1e-3, val_fraction=VAL_FRACTION, patience=10,
                    seed=0, device=None, progress=True):
    """Train a UNet to re-colour ``normal_images`` (N, 3, S, S) in [0, 1]; return it in eval mode.

    Loss: MSE between predicted and true scaled a*b* (as the released code; the paper's U-Net has no
    GAN). Adam(lr, betas=(0.9, 0.999)) as in Section 4-2. The U-Net starts out predicting the
    training images' mean colour. Each training batch gets a fresh Fancy PCA draw (alpha 0.08)
    before its L*a*b* is computed. A random ``val_fraction`` of the images is held
    out; training stops when their loss has not improved for ``patience`` epochs, and the weights of
    the best epoch are restored. With ``val_fraction=0`` the training loss is watched instead, as in
    the released code. A loss that becomes NaN or inf (a too large ``lr``) ends training as early
    stopping does, with the best epoch's weights; if no epoch had a finite loss, a ValueError says
    so. The images live on the device as one tensor (no DataLoader); on CUDA the model runs in
    bf16 autocast and channels_last. ``seed`` (0..2**32 - 1) seeds everything, the U-Net's initial
    weights too: same seed, same numbers on the CPU.

    Returns the UNet on ``device`` in eval mode, with ``.history`` = dict(train_loss=[...],
    val_loss=[...] (empty when val_fraction=0), best_epoch=int), losses per epoch.
    """
    val_count = _check_colorizer_training(normal_images, epochs, batch_size, lr, val_fraction, patience, seed)
    count = normal_images.shape[0]

    device = get_device(device)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    unet = to_device(UNet(normal_images.shape[2]), device)
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr, betas=(0.9, 0.999), fused=True)  # one kernel per step

    images = normal_images.to(device, torch.float32)
    order = torch.randperm(count, generator=generator).to(device)
    train_images, val_images = images[order[val_count:]], images[order[:val_count]]
    val_lab = rgb_to_lab(val_images)
    _start_at_mean_colour(unet, train_images, batch_size)
    history = dict(train_loss=[], val_loss=[], best_epoch=0)
    best_loss, best_state, stale = float("inf"), None, 0

    bar = tqdm(range(epochs), desc="colouriser", disable=not progress)
    for epoch in bar:
        history["train_loss"].append(_train_one_epoch(unet, optimizer, train_images, batch_size, generator))

        if val_count:
            history["val_loss"].append(_validation_loss(unet, val_lab, batch_size))
        watched = history["val_loss"][-1] if val_count else history["train_loss"][-1]
        if watched < best_loss:
            best_loss, stale, history["best_epoch"] = watched, 0, epoch
            best_state = {name: value.detach().clone() for name, value in unet.state_dict().items()}
        else:
            stale += 1
        bar.set_postfix(train=f"{history['train_loss'][-1]:.3g}",
                        val=f"{history['val_loss'][-1]:.3g}" if val_count else "-")
        if stale >= patience or not math.isfinite(watched):
            break

    if best_state is None:
        raise ValueError(f"the colouriser's loss was {watched} from the first epoch on: lr={lr} is too large for "
                         f"these images; lower it")
    unet.load_state_dict(best_state)
    unet.eval()
    unet.history = history
    return unet


# Re-colouring and the colour anomaly map -------------------------------------------------------
def _check_recoloring(unet, rgb, batch_size):
    check_images(rgb, "rgb")
    check_trained_network(unet, "unet", "UNet")
    check_int(batch_size, "batch_size", 1)


def _lab_pairs(unet, rgb, batch_size):
    """Yield (true L*a*b*, re-coloured L*a*b*) batch by batch, on the model's device."""
    device = next(unet.parameters()).device
    for batch in rgb.split(batch_size):
        lab = rgb_to_lab_unchecked(batch.to(device, torch.float32))  # the callers checked rgb once
        yield lab, _recolored_lab(unet, lab)


def colorize(unet, rgb, batch_size=64):
    """Re-colour ``rgb`` (N, 3, H, W): its own L* with the U-Net's a*b*, back in RGB (on rgb's device).

    Predicted colours outside the sRGB gamut are clipped by the conversion to RGB, so a re-coloured
    image converted back to L*a*b* can differ slightly from the L*a*b* the map is computed on.
    """
    _check_recoloring(unet, rgb, batch_size)
    # no_grad, not inference_mode: the result is an ordinary tensor, to change in place or to differentiate
    with torch.no_grad():
        return torch.cat([lab_to_rgb(recolored) for _, recolored in _lab_pairs(unet, rgb, batch_size)]).to(rgb.device)


def anomaly_map(unet, rgb, batch_size=64):
    """The colour anomaly map: CIEDE2000 between each image and its re-colouring, (N, H, W) on rgb's device.

    Computed on true L*a*b* (Section 3-1), before any clipping to the sRGB gamut. Since the L* is the
    input's own, the map measures chroma and hue errors only.
    """
    _check_recoloring(unet, rgb, batch_size)
    with torch.no_grad():  # as in colorize: maps /= scale works
        return torch.cat([ciede2000(lab, recolored) for lab, recolored in _lab_pairs(unet, rgb, batch_size)]).to(rgb.device)
