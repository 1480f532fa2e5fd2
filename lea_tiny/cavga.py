"""CAVGA: a variational autoencoder whose attention is trained to cover the normal (Venkataramanan et al., ECCV 2020).

"Attention Guided Anomaly Localization in Images" (arXiv 1911.08616). A convolutional VAE with a
*spatial* latent z (a small image of latent vectors, not one vector) learns to reconstruct normal
images. An attention map A comes from Grad-CAM of the latent: where the encoder's features matter
for z. Two losses on A make the network look at all of a normal image:

    unsupervised        L_ae  = mean_pixels(1 - A)                           attention expansion
    weakly supervised   L_cga = mean_pixels(1 - A_n + A_a), on normals       complementary guided
                                that the classifier on z gets right           attention

where A_n, A_a are the Grad-CAMs of a two-class classifier's "normal" and "anomalous" logits. At
test time an anomalous region is where the attention does not go: the localisation map is 1 - A
(1 - A_n when weakly supervised), and the image score comes from the reconstruction error.

Read top to bottom:
    attention_expansion_loss, complementary_guided_attention_loss, kl_divergence   the loss terms
    CAVGA               encoder -> spatial latent -> decoder, a classifier on z, Grad-CAM attention
    CavgaDetector       score = reconstruction error, localize = 1 - attention
    train               the method behind lea_tiny's interface (``lea_tiny.detector``)

Where lea_tiny departs from the paper (no code was released; unknown details are chosen here):
- **No adversarial term.** The paper adds a discriminator on the reconstructions (with a small weight);
  it sharpens images, and the attention losses, the idea taught here, do not depend on it. A GAN
  doubles the networks and is unstable on a few dozen images and a few epochs on a CPU, so it is left
  out: the reconstructions are blurrier, which raises the reconstruction error of normal images too.
- **Where Grad-CAM looks.** Grad-CAM needs a scalar: the sum of z over the whole latent (the paper
  does not say which one). On the encoder's last features, whose 1x1 convolutions make z, the
  gradient would be the same at every position and Grad-CAM would be the channel sum of z's mean;
  so it is taken one stage earlier (1/4 of the image size), where a convolution and a nonlinearity
  lie between the features and z. A = sigmoid(Grad-CAM), as in the paper, without the ReLU of
  Grad-CAM (with it, A could not fall below 0.5), upsampled bilinearly to the image.
- **A sigmoid can be inflated.** L_ae is 0 when A = 1 everywhere, and larger features make the
  sigmoid saturate; the small weight 0.01 (the paper's) keeps that in check, it does not forbid it.
- Reconstruction: mean squared error; KL divergence per latent element, weight ``kl_weight``. The image
  score is the mean of the hottest 1 % of the per-pixel squared error (``maps.image_score``).
- Weakly supervised: the reconstruction and KL terms see the normal images only (the VAE is a model of
  normality), the classifier's cross-entropy sees all of them.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lea_tiny import autocast, check_int, get_device, seed_everything
from lea_tiny.maps import image_score
from lea_tiny.detector import (check_same_size, check_square, check_training_labels, grad_cam, in_batches, on_device,
                               train_batches)
from lea_tiny.checks import check_bool, check_lr

ATTENTION_WEIGHT = 0.01  # the paper's weight on L_ae and L_cga
NORMAL, ANOMALOUS = 0, 1


# The loss terms --------------------------------------------------------------------------------------------------
def attention_expansion_loss(attention):
    """L_ae = mean(1 - A): 0 when the attention covers every pixel, 1 when it covers none."""
    return (1 - attention).mean()


def complementary_guided_attention_loss(normal_attention, anomalous_attention, counts):
    """L_cga = mean(1 - A_n + A_a) over the images where ``counts`` is True (0 when there are none).

    ``counts`` marks normal images that the classifier gets right: only there is "all of it is normal"
    the right answer for A_n, and "none of it is anomalous" for A_a.
    """
    return _mean_over((1 - normal_attention + anomalous_attention).flatten(1).mean(dim=1), counts)


def kl_divergence(mean, log_variance):
    """KL(N(mean, exp(log_variance)) || N(0, 1)) per latent element, averaged per image: (N,)."""
    return (-0.5 * (1 + log_variance - mean.square() - log_variance.exp())).flatten(1).mean(dim=1)


def _mean_over(per_image, chosen):
    """The mean of ``per_image`` over the ``chosen`` images; 0 if a batch holds none of them."""
    return (per_image * chosen).sum() / chosen.sum().clamp(min=1)


# The network -----------------------------------------------------------------------------------------------------
def _down(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.LeakyReLU(0.2))


def _up(in_channels, out_channels):
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class CAVGA(nn.Module):
    """RGB (N, 3, S, S) -> features (S/4) -> latent z (``latent_channels`` x S/8 x S/8) -> reconstruction.

    ``forward`` returns the reconstruction, the latent's mean and log-variance, z, the features that
    Grad-CAM reads, and the classifier's two logits (normal, anomalous) on the average of z.
    """

    def __init__(self, latent_channels=16):
        super().__init__()
        self.features = nn.Sequential(_down(3, 32), _down(32, 64))
        self.to_latent = _down(64, 128)
        self.mean, self.log_variance = nn.Conv2d(128, latent_channels, 1), nn.Conv2d(128, latent_channels, 1)
        self.decoder = nn.Sequential(_up(latent_channels, 128), _up(128, 64),
                                     nn.ConvTranspose2d(64, 3, 4, 2, 1), nn.Sigmoid())
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(latent_channels, 2))

    def forward(self, images):  # (N, 3, S, S)
        features = self.features(images)  # (N, 64, S/4, S/4)
        hidden = self.to_latent(features)  # (N, 128, S/8, S/8)
        mean, log_variance = self.mean(hidden), self.log_variance(hidden)  # each (N, latent_channels, S/8, S/8)
        # Reparameterisation: z = mean + sigma * eps while training; the mean itself at test time.
        z = mean + torch.randn_like(mean) * (0.5 * log_variance).exp() if self.training else mean
        # reconstruction (N, 3, S, S), ..., logits (N, 2)
        return self.decoder(z), mean, log_variance, z, features, self.classifier(z)

    @staticmethod
    def attention(output, features, size, create_graph=False):
        """A = sigmoid(Grad-CAM of ``output`` on ``features``), (N, S, S) at the image ``size``."""
        cam = grad_cam(output, features, create_graph)
        return torch.sigmoid(F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False))[:, 0]


def training_loss(model, images, labels, *, weakly_supervised, attention_loss, kl_weight, attention_weight):
    """One batch's loss (see the module docstring); attention losses through Grad-CAM with its graph kept."""
    with autocast(images.device):
        reconstruction, mean, log_variance, z, features, logits = model(images)
    normal = (labels == NORMAL).float()
    squared_error = (reconstruction.float() - images).square().flatten(1).mean(dim=1)
    loss = _mean_over(squared_error + kl_weight * kl_divergence(mean.float(), log_variance.float()), normal)
    if weakly_supervised:
        loss = loss + F.cross_entropy(logits.float(), labels)
    if attention_loss:
        size = images.shape[-2:]
        if weakly_supervised:
            attention_normal = model.attention(logits[:, NORMAL], features, size, create_graph=True)
            attention_anomalous = model.attention(logits[:, ANOMALOUS], features, size, create_graph=True)
            counts = normal * (logits.argmax(dim=1) == NORMAL).float()
            attention_term = complementary_guided_attention_loss(attention_normal, attention_anomalous, counts)
        else:
            attention_term = attention_expansion_loss(model.attention(z.flatten(1).sum(1), features, size, True))
        loss = loss + attention_weight * attention_term.float()
    return loss


# The detector ----------------------------------------------------------------------------------------------------
@dataclass
class CavgaDetector:
    model: CAVGA
    image_size: tuple
    weakly_supervised: bool
    device: torch.device

    def error_maps(self, images):
        """Per-pixel squared reconstruction error summed over RGB, (N, H, W)."""
        check_same_size(images, self.image_size)
        return in_batches(lambda batch: (self.model(batch)[0].float() - batch).square().sum(dim=1), images,
                          self.device)

    def score(self, images):
        """The mean of the hottest 1 % of the reconstruction error (higher = more anomalous)."""
        return image_score(self.error_maps(images))

    def localize(self, images):
        """1 - A: where the attention does not go. A is Grad-CAM of the "normal" logit (weakly supervised) or of z."""
        check_same_size(images, self.image_size)

        def not_attended(batch):
            _, _, _, z, features, logits = self.model(batch)
            output = logits[:, NORMAL] if self.weakly_supervised else z.flatten(1).sum(1)
            return 1 - self.model.attention(output, features, batch.shape[-2:])
        return in_batches(not_attended, images, self.device, needs_grad=True)


def train(images, labels, *, epochs, seed=0, device=None, progress=False, weakly_supervised=False,
          attention_loss=True, latent_channels=16, kl_weight=0.01, attention_weight=ATTENTION_WEIGHT, lr=1e-3,
          batch_size=8, augment=True):
    """Train CAVGA; returns a detector (``score``: reconstruction error, ``localize``: 1 - attention).

    Unsupervised (default): learns from the normal images (label 0) only, with L_ae. Weakly supervised:
    also reads the anomalous images and their labels (both classes needed), with a classifier on z and
    L_cga. ``attention_loss=False`` drops L_ae / L_cga: the key ablation. Images must be square with a
    side that is a multiple of 8. Same seed, same numbers on the CPU.
    """
    labels = check_training_labels(images, labels, weakly_supervised)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)
    check_int(latent_channels, "latent_channels", 1)
    check_lr(lr)
    for value, name in ((weakly_supervised, "weakly_supervised"), (attention_loss, "attention_loss"),
                        (augment, "augment")):
        check_bool(value, name)
    check_square(images, 8, "CAVGA")
    if not weakly_supervised:
        images, labels = images[labels == NORMAL], labels[labels == NORMAL]
    device = get_device(device)
    seed_everything(seed)
    model = CAVGA(latent_channels).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    def batch_loss(image_batch, label_batch, epoch):
        return training_loss(model, image_batch, label_batch, weakly_supervised=weakly_supervised,
                     attention_loss=attention_loss, kl_weight=kl_weight, attention_weight=attention_weight)
    model.history = train_batches(model, batch_loss, on_device(images, device), labels, epochs=epochs, lr=lr,
                                  batch_size=batch_size, seed=seed, augment=augment, progress=progress, desc="CAVGA")
    return CavgaDetector(model, tuple(images.shape[-2:]), weakly_supervised, device)
