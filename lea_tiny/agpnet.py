"""AGPNet: learn to undo noise put where it hurts most (Xia et al., "Attention-Guided Perturbation for
Unsupervised Image Anomaly Detection", arXiv 2408.07490).

A reconstruction network that is good enough reconstructs anomalies too, and then its error says
nothing. AGPNet makes the task harder in a useful way: it reconstructs the features f of a frozen
encoder from *perturbed* copies, and an auxiliary branch decides where the noise goes, an attention
mask M that puts more noise on the regions that matter, more and more as training goes on ("easy to
hard"). At test time there is no noise, and the anomaly map is the discrepancy between the features
and their reconstruction. Written out, per training image at epoch t of T:

    f~    = f + alpha(t) * M * eps,    eps ~ N(0, 1),    alpha(t) = max_noise * (t + 1) / T
    loss  = mean over positions of  1 - cos(D(f~), f)          (cos over the channels)
    map   = 1 - cos(D(f), f),  upsampled to the image;  score = mean of the map's hottest 1 %

Read top to bottom:
    random_encoder      the frozen encoder
    Reconstructor       D, the reconstruction branch
    noise_mask          the auxiliary branch: where the noise goes ("attention", "uniform", "colour")
    perturb, cosine_discrepancy
    AgpDetector, train

Where lea_tiny departs from the paper (no code was released, and its method section is not known here in detail, so its
formulas are not followed; what is here is the idea of the abstract, built from lea_tiny's pieces):
- **The frozen encoder is a fixed random one.** The paper reconstructs features of a pretrained
  network; none can be downloaded here. lea_tiny's own pretext task, the colouriser, reads L* only,
  so its encoder is blind to colour, the very thing a colour anomaly changes. A random convolutional
  encoder on RGB (seeded, never trained) does see colour; its features are standardised per channel
  on the training normals. The cost: random features know no objects or textures, only local colour
  and contrast, so the reconstruction branch learns from much weaker features than the paper's.
- **The auxiliary branch is not trained.** M = sigmoid(channel mean of f), Eq. 2 of LEA-Net on the
  frozen features: high where the features are strong. ``noise="uniform"`` spreads the same mean
  noise evenly over the image (the key ablation); ``noise="colour"``, lea_tiny's twist, takes M from
  the scaled colour anomaly map of a colouriser trained on the training normals, so noise goes where
  the colour is hardest to predict.
- The noise ramps linearly over the epochs from 0 to ``max_noise`` (the paper's schedule is unknown).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lea_tiny import autocast, check_int, get_device, seed_everything
from lea_tiny.attention import attention_map
from lea_tiny.colorize import anomaly_map, train_colorizer
from lea_tiny.maps import image_score, map_scale, scale_maps
from lea_tiny.detector import check_same_size, check_square, check_training_labels, in_batches, on_device, train_batches
from lea_tiny.checks import check_lr

NOISE = ("attention", "uniform", "colour")
FEATURE_CHANNELS = 64
FEATURE_STRIDE = 4


# The frozen encoder --------------------------------------------------------------------------------------------
def random_encoder(channels=FEATURE_CHANNELS):
    """RGB (N, 3, S, S) -> (N, channels, S/4, S/4), He-initialised from the current torch seed and frozen."""
    encoder = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(32, channels, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(channels, channels, 3, stride=2, padding=1))
    for module in encoder:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return encoder.requires_grad_(False).eval()


class Features(nn.Module):
    """The frozen encoder, its output standardised per channel with the training normals' mean and std."""

    def __init__(self, normal_images):
        super().__init__()
        self.encoder = random_encoder()
        with torch.no_grad():
            features = torch.cat([self.encoder(batch) for batch in normal_images.split(64)])
        self.register_buffer("mean", features.mean(dim=(0, 2, 3), keepdim=True))
        self.register_buffer("std", features.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6))

    def forward(self, images):  # (N, 3, S, S)
        with torch.no_grad():
            return (self.encoder(images) - self.mean) / self.std  # (N, FEATURE_CHANNELS, S/4, S/4)


# The reconstruction branch ---------------------------------------------------------------------------------------
class Reconstructor(nn.Module):
    """D: features -> features through a bottleneck at half their size (an identity would learn nothing)."""

    def __init__(self, channels=FEATURE_CHANNELS):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.ConvTranspose2d(128, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, features):  # (N, channels, h, w), h and w even
        return self.body(features)  # (N, channels, h, w), through (N, 128, h/2, w/2)


# The auxiliary branch: where the noise goes -------------------------------------------------------------------------
def noise_mask(features, noise, colour_maps=None):
    """M (N, 1, h, w) in [0, 1]: attention (Eq. 2 on f), its per-image mean everywhere (uniform), or the colour map."""
    if noise == "colour":
        return F.interpolate(colour_maps, size=features.shape[-2:], mode="area")
    mask = attention_map(features)
    if noise == "uniform":
        return mask.mean(dim=(2, 3), keepdim=True).expand_as(mask)
    return mask


def perturb(features, mask, strength, generator=None):
    """f~ = f + strength * M * eps, eps ~ N(0, 1) drawn from ``generator``."""
    draws = torch.randn(features.shape, generator=generator, device=generator.device if generator is not None else None)
    return features + strength * mask * draws.to(features.device)


def cosine_discrepancy(reconstruction, features):
    """1 - cos over the channels at every position: (N, h, w), 0 where the reconstruction points the same way."""
    return 1 - F.cosine_similarity(reconstruction.float(), features.float(), dim=1)


# The detector ------------------------------------------------------------------------------------------------------
@dataclass
class AgpDetector:
    features: Features
    reconstructor: Reconstructor
    image_size: tuple
    device: torch.device

    def localize(self, images):
        """1 - cos(D(f), f), no noise, upsampled bilinearly to the image: (N, H, W)."""
        check_same_size(images, self.image_size)

        def discrepancy(batch):
            features = self.features(batch)
            maps = cosine_discrepancy(self.reconstructor(features), features).unsqueeze(1)
            return F.interpolate(maps, size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return in_batches(discrepancy, images, self.device)

    def score(self, images):
        """The mean of the hottest 1 % of the discrepancy map."""
        return image_score(self.localize(images))


def _colour_maps(normal_images, colorizer_epochs, seed, device):
    """Scaled colour anomaly maps (N, 1, H, W) of the training normals, by a colouriser trained on them."""
    colorizer = train_colorizer(normal_images, colorizer_epochs, seed=seed, device=device, progress=False)
    maps = anomaly_map(colorizer, normal_images.to(device))
    return scale_maps(maps, map_scale(maps))


def train(images, labels, *, epochs, seed=0, device=None, progress=False, noise="attention", max_noise=1.0,
          colorizer_epochs=10, lr=1e-3, batch_size=8, augment=True):
    """Train AGPNet's reconstruction branch; returns a detector (``score``, ``localize``: feature discrepancy).

    Unsupervised: learns from the normal images (label 0) only; the anomalous ones are ignored.
    ``noise`` is where the noise goes: "attention" (AGPNet), "uniform" (the ablation) or "colour"
    (the colour anomaly map as the attention; its colouriser trains for ``colorizer_epochs``).
    Images must be square with a side that is a multiple of 8. Same seed, same numbers on the CPU.
    """
    labels = check_training_labels(images, labels, weakly_supervised=False)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)
    check_int(colorizer_epochs, "colorizer_epochs", 1)
    check_lr(lr)
    if noise not in NOISE:
        raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
    if isinstance(max_noise, bool) or not isinstance(max_noise, (int, float)) or not max_noise >= 0:
        raise ValueError(f"max_noise must be a number >= 0, got {max_noise!r}")
    check_square(images, 8, "AGPNet")
    device = get_device(device)
    normals = on_device(images[labels == 0], device)
    seed_everything(seed)
    features = Features(normals).to(device)
    reconstructor = Reconstructor().to(device)
    # The colour map travels with its image as a fourth channel, so that the symmetries of augmentation
    # turn both alike.
    inputs = torch.cat([normals, _colour_maps(normals, colorizer_epochs, seed, device)], dim=1) \
        if noise == "colour" else normals
    generator = torch.Generator().manual_seed(seed + 1)

    def batch_loss(batch, _, epoch):
        clean = features(batch[:, :3])
        mask = noise_mask(clean, noise, batch[:, 3:])
        with autocast(device):
            reconstruction = reconstructor(perturb(clean, mask, max_noise * (epoch + 1) / epochs, generator))
        return cosine_discrepancy(reconstruction, clean).mean()
    reconstructor.history = train_batches(reconstructor, batch_loss, inputs, torch.zeros(len(inputs)), epochs=epochs,
                                          lr=lr, batch_size=batch_size, seed=seed, augment=augment,
                                          progress=progress, desc=f"AGPNet ({noise} noise)")
    return AgpDetector(features, reconstructor, tuple(images.shape[-2:]), device)
