"""Anomaly maps from another pretext task: reconstruction by an autoencoder.

LEA-Net's map comes from colourisation, but nothing downstream needs colour. The follow-ups by the
same group (Hayakawa et al., "Layer-wise External Attention for Efficient Deep Anomaly Detection",
IMPROVE 2023; Nakanishi et al., "Layer-Wise External Attention by Well-Localized Attention Map for
Efficient Deep Anomaly Detection", SN Computer Science 2024) feed it maps from other pretext tasks;
the second compares colour reconstruction with an autoencoder (and PaDiM) and finds that what
matters is how well the map localises the anomaly on the data at hand.

The pretext task here: an autoencoder learns, from normal images only, to squeeze an image through
a narrow middle and rebuild it. It rebuilds what normal images look like; what it has never seen it
rebuilds wrongly. The map is the per-pixel L1 error, the mean over the three channels:

    map(x)[i, j] = (1/3) * sum_c | x[c, i, j] - decoder(encoder(x))[c, i, j] |   # in [0, 1]

Read top to bottom:
    Autoencoder                 four stride-2 stages down, four up, no skip connections
    train_autoencoder           L1 reconstruction of normal images, Adam, optionally denoising
    reconstruction_map          the map above, (N, H, W)
    fold_reconstruction_maps    one fold's maps without leakage, as ``maps.fold_anomaly_maps``

What lea_tiny chooses (the follow-ups do not describe their autoencoder):
- The stages are the colouriser's U-Net stages (``colorize.py``), four of them (64 px -> 4 x 4), with
  no skip connections: a skip would let the input through to the output, and the error, the map,
  would vanish on every image.
- L1 training loss, the error the map measures (Hayakawa et al. use per-pixel L1 for the maps of
  their non-colour tasks). Adam(1e-3); a fixed number of epochs, the last one's weights kept, no
  early stopping and no colour augmentation (both are the colouriser's).
- Like the colouriser, the untrained autoencoder paints every pixel in the training images' mean
  colour (zero last-layer weights, that colour as the bias), so a short run learns what varies.
- ``noise > 0`` trains a denoising autoencoder (Vincent et al. 2008): Gaussian noise of that
  standard deviation on the input, the clean image as the target. Maps are made without noise.
- The map is in RGB units (0..1), not CIEDE2000; ``maps.map_scale`` / ``scale_maps`` scale it
  for the networks all the same, since they only measure a percentile of the training maps.
"""

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lea_tiny import autocast, get_device, seed_everything, to_device
from lea_tiny.checks import check_images, check_int, check_number, check_trained_network
from lea_tiny.colorize import down_block, up_block
from lea_tiny.maps import fold_anomaly_maps

WIDTHS = (32, 64, 128, 256)  # channels after each stride-2 stage of the encoder


class Autoencoder(nn.Module):
    """RGB (N, 3, S, S) in [0, 1] -> its reconstruction (N, 3, S, S) in (0, 1), S a multiple of 16.

    Encoder: four [4x4 conv, stride 2 -> BatchNorm (not on the first) -> LeakyReLU 0.2] stages,
    32/64/128/256 channels, so the middle is S/16 x S/16 x 256, a third as many numbers as the input.
    Decoder: three [2x2 transposed conv, stride 2 -> BatchNorm -> ReLU] stages back to 32 channels
    and a last 2x2 transposed conv to 3 channels with a sigmoid.
    """

    def __init__(self, image_size):
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four halvings), got {image_size!r}")
        self.image_size = image_size
        inputs = (3, *WIDTHS[:-1])
        self.encoder = nn.Sequential(*(down_block(a, b, batch_norm=stage > 0)
                                       for stage, (a, b) in enumerate(zip(inputs, WIDTHS))))
        self.decoder = nn.Sequential(*(up_block(a, b) for a, b in zip(WIDTHS[:0:-1], WIDTHS[-2::-1])))
        self.head = nn.ConvTranspose2d(WIDTHS[0], 3, 2, stride=2)

    def forward(self, rgb):
        expected = (3, self.image_size, self.image_size)
        if rgb.ndim != 4 or tuple(rgb.shape[1:]) != expected:
            raise ValueError(f"Autoencoder({self.image_size}) expects RGB of shape (N, 3, {self.image_size}, "
                             f"{self.image_size}), got {tuple(rgb.shape)}")
        middle = self.encoder(rgb)  # (N, 256, S/16, S/16)
        return torch.sigmoid(self.head(self.decoder(middle)))  # decoder: (N, 32, S/2, S/2); head: (N, 3, S, S)


def _reconstruction(model, rgb):
    """The reconstruction in float32 (computed in bf16 on CUDA)."""
    with autocast(rgb.device):
        return model(rgb).float()


def _start_at_mean_colour(model, images):
    """Zero last-layer weights and bias = logit(mean RGB): the untrained model paints the mean colour."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.logit(images.mean(dim=(0, 2, 3)).clamp(1e-3, 1 - 1e-3)))


def _check_training(normal_images, epochs, batch_size, lr, noise):
    check_images(normal_images, "normal_images")
    if normal_images.shape[2] != normal_images.shape[3]:
        raise ValueError(f"normal_images must be square, got {normal_images.shape[2]}x{normal_images.shape[3]}")
    if normal_images.shape[0] < 2:
        raise ValueError(f"train_autoencoder needs at least 2 normal images (BatchNorm), got {normal_images.shape[0]}")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)  # BatchNorm trains on 2 images or more
    check_number(lr, "lr", above=0)
    check_number(noise, "noise (the standard deviation of the input noise)", at_least=0)


def train_autoencoder(normal_images, epochs, *, batch_size=16, lr=1e-3, noise=0.0, seed=0, device=None,
                      progress=True):
    """Train an ``Autoencoder`` to rebuild ``normal_images`` (N, 3, S, S) in [0, 1]; return it in eval mode.

    L1 loss, Adam(lr), ``epochs`` passes over the images in batches reshuffled every epoch by a
    generator seeded with ``seed``; the last epoch's weights are kept. ``noise`` > 0: a denoising
    autoencoder, N(0, noise^2) added to each input (clipped to [0, 1]), the clean image the target.
    On CUDA it runs in bf16 autocast and channels_last; same seed, same numbers on the CPU.
    Returns the model on ``device`` with ``.history = dict(train_loss=[...])``, one mean per epoch.
    """
    _check_training(normal_images, epochs, batch_size, lr, noise)
    device = get_device(device)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model = to_device(Autoencoder(normal_images.shape[2]), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    images = normal_images.to(device, torch.float32)
    _start_at_mean_colour(model, images)
    history = dict(train_loss=[])

    model.train()
    for _ in tqdm(range(epochs), desc="autoencoder", disable=not progress):
        order = torch.randperm(len(images), generator=generator).to(device)
        total, seen = torch.zeros((), device=device), 0
        # One short of the end, so that no batch holds a single image (BatchNorm needs 2).
        for start in range(0, len(images) - 1, batch_size):
            clean = images[order[start:start + batch_size]]
            noisy = clean
            if noise:
                draws = torch.randn(clean.shape, generator=generator).to(device)
                noisy = (clean + noise * draws).clamp(0.0, 1.0)
            loss = F.l1_loss(_reconstruction(model, noisy), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(clean)
            seen += len(clean)
        history["train_loss"].append(total.item() / seen)
    model.eval()
    model.history = history
    return model


def reconstruction_map(model, rgb, batch_size=64):
    """The reconstruction anomaly map: mean over channels of |rgb - reconstruction|, (N, H, W) on rgb's device.

    ``model`` is a trained ``Autoencoder`` in eval mode; ``rgb`` (N, 3, H, W) in [0, 1]. Values lie in [0, 1].
    """
    check_images(rgb, "rgb")
    check_trained_network(model, "model", "Autoencoder")
    check_int(batch_size, "batch_size", 1)
    device = next(model.parameters()).device
    maps = []
    with torch.no_grad():  # not inference_mode: the maps stay ordinary tensors, as the colour maps do
        for batch in rgb.split(batch_size):
            batch = batch.to(device, torch.float32)
            maps.append((batch - _reconstruction(model, batch)).abs().mean(dim=1))
    return torch.cat(maps).to(rgb.device)


def fold_reconstruction_maps(images, labels, train_index, *, epochs, cross_fit_parts=2, seed=0, device=None,
                             progress=False, **autoencoder_kwargs):
    """Reconstruction maps for all N ``images`` of one fold, without leakage: (N, H, W) float32.

    The contract of ``maps.fold_anomaly_maps``, with autoencoders for colourisers: they learn from
    the fold's training normals only; those normals get cross-fitted maps (``cross_fit_parts`` parts), every
    other image a map from one autoencoder on all of them. Extra keyword arguments (``batch_size``,
    ``lr``, ``noise``) go to ``train_autoencoder``.
    """
    return fold_anomaly_maps(images, labels, train_index, epochs=epochs, cross_fit_parts=cross_fit_parts, seed=seed,
                             device=device, progress=progress, trainer=train_autoencoder,
                             make_map=reconstruction_map, **autoencoder_kwargs)
