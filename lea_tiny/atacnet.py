"""ATAC-Net: a classifier that learns from a few known anomalies and takes a zoomed second look
(Gupta, Gautam and Malyala, "ATAC-Net: Zoomed view works better for Anomaly Detection", arXiv 2406.14398).

Two ideas on top of a plain classifier that outputs one anomaly score s per image:

1. **A deviation loss** (DevNet, Pang et al. 2019). Scores of normal images should look like draws
   from a reference N(mu_R, sigma_R); anomalies should lie at least a margin a above it. With
   dev = (s - mu_R) / sigma_R and label y (1 = anomalous):

       L_dev = (1 - y) * |dev| + y * max(0, a - dev),      a = 5

   A handful of labelled anomalies is enough to set the direction "anomalous = up", and the normal
   images pin the scale, so the score needs no calibration to a probability.
2. **Attention-guided cropping.** The classifier's Grad-CAM (Selvaraju et al. 2017) says where it
   looked; the box around the hottest part (Grad-CAM >= half its maximum) is cut out, resized to the
   full image and shown again with the same label, a zoomed view of the suspect region:

       L = L_dev(s(x)) + L_dev(s(zoom(x)))

   At inference both views are scored (Fig. 2 of the paper: the un-cropped and the cropped flow
   are used in training and at inference) and their mean is the image score.

Read top to bottom:
    deviation_loss      L_dev
    saliency            ReLU(Grad-CAM) of the score at one attention point, at image size
    attention_crop      the zoom: box, crop, resize
    AtacDetector, train

Where lea_tiny departs from the paper (no code was released; the reading of its method is not
verified, so the details are the usual ones of the work it builds on, chosen here):
- The classifier is lea_tiny's basic CNN (``lea_tiny.adn``, the paper's Tables 7-8) trained from
  scratch; the paper builds on a ResNet-50 (its Fig. 4). Grad-CAM is taken at attention point 2 (1/4 of the
  image size), fine enough to crop from at teaching sizes.
- DevNet draws 5000 reference scores from N(0, 1) in every batch and uses their mean and standard
  deviation; here they are the exact 0 and 1, which is what the draws estimate, without their noise.
- The crop follows WS-DAN (Hu et al. 2019): max-normalised attention thresholded at 0.5, its bounding
  box, bilinear resizing. Where the attention is zero everywhere the whole image is the box.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lea_tiny import autocast, check_int, get_device, seed_everything
from lea_tiny.adn import make_adn
from lea_tiny.detector import (check_same_size, check_square, check_training_labels, grad_cam, in_batches, on_device,
                               train_batches)
from lea_tiny.checks import check_bool, check_lr

MARGIN = 5.0  # DevNet's a
CAM_POINT = 2  # Grad-CAM on the features of attention point 2 (1/4 of the image size)
CROP_THRESHOLD = 0.5  # of the attention's maximum, as WS-DAN


def deviation_loss(scores, labels, margin=MARGIN):
    """DevNet's L_dev with the reference N(0, 1): mean of |s| on normals and max(0, margin - s) on anomalies."""
    labels = labels.float()
    return ((1 - labels) * scores.abs() + labels * (margin - scores).clamp(min=0)).mean()


def saliency(scores, points, size, create_graph=False):
    """ReLU(Grad-CAM) of ``scores`` (N,) on the features of ``CAM_POINT``, upsampled to ``size``: (N, H, W)."""
    cam = grad_cam(scores, points[CAM_POINT - 1], create_graph).clamp(min=0)
    return F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def attention_crop(images, attention, threshold=CROP_THRESHOLD):
    """Each image's box around attention >= ``threshold`` x its maximum, cut out and resized to the image size."""
    size = images.shape[-2:]
    peak = attention.flatten(1).amax(dim=1)[:, None, None]
    hot = (attention >= threshold * peak) | (peak <= 0)  # no attention at all: the whole image
    crops = []
    for image, region in zip(images, hot):
        rows, columns = region.any(dim=1).nonzero()[:, 0], region.any(dim=0).nonzero()[:, 0]
        box = image[:, rows.min():rows.max() + 1, columns.min():columns.max() + 1]
        crops.append(F.interpolate(box.unsqueeze(0), size=size, mode="bilinear", align_corners=False))
    return torch.cat(crops)


def _two_looks(model, images):
    """(scores of the images, scores of their zoomed crops, the saliency the crops were cut by)."""
    scores, points = model(images)  # (N,), five (N, C_p, S / 2**p, S / 2**p)
    attention = saliency(scores.float(), points, images.shape[-2:]).detach()  # (N, S, S)
    return scores.float(), model(attention_crop(images, attention))[0].float(), attention  # (N,), (N,), (N, S, S)


@dataclass
class AtacDetector:
    model: torch.nn.Module
    image_size: tuple
    zoom: bool
    device: torch.device

    def score(self, images):
        """The classifier's score (higher = more anomalous); with the zoom, the mean over both views."""
        check_same_size(images, self.image_size)
        if not self.zoom:
            return in_batches(lambda batch: self.model(batch)[0], images, self.device)
        return in_batches(lambda batch: torch.stack(_two_looks(self.model, batch)[:2]).mean(dim=0), images,
                          self.device, needs_grad=True)

    def localize(self, images):
        """The Grad-CAM saliency of the score, ReLU'd and at image size, (N, H, W): the paper's explanation."""
        check_same_size(images, self.image_size)

        def cam(batch):
            scores, points = self.model(batch)
            return saliency(scores.float(), points, batch.shape[-2:])
        return in_batches(cam, images, self.device, needs_grad=True)


def train(images, labels, *, epochs, seed=0, device=None, progress=False, zoom=True, margin=MARGIN, lr=3e-4,
          batch_size=8, augment=True):
    """Train ATAC-Net; returns a detector (``score``: the classifier's, ``localize``: its Grad-CAM).

    Weakly supervised: reads every label it is given and needs both classes; a few anomalous images are
    enough (pass fewer to use fewer). ``zoom=False`` drops the attention-guided crop in training and at
    inference: the key ablation. Images must be square, a multiple of 32 px (the CNN halves them five
    times). Same seed, same numbers on the CPU.
    """
    labels = check_training_labels(images, labels, weakly_supervised=True)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 2)
    check_lr(lr)
    check_bool(zoom, "zoom")
    check_bool(augment, "augment")
    check_square(images, 32, "ATAC-Net")  # the CNN halves them five times
    device = get_device(device)
    seed_everything(seed)
    model = make_adn("cnn", 3, images.shape[-1]).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    def batch_loss(image_batch, label_batch, epoch):
        with autocast(device):
            if not zoom:
                return deviation_loss(model(image_batch)[0].float(), label_batch, margin)
            scores, zoomed_scores, _ = _two_looks(model, image_batch)
        return deviation_loss(scores, label_batch, margin) + deviation_loss(zoomed_scores, label_batch, margin)
    model.history = train_batches(model, batch_loss, on_device(images, device), labels, epochs=epochs, lr=lr,
                                  batch_size=batch_size, seed=seed, augment=augment, progress=progress,
                                  desc="ATAC-Net" + (" with zoom" if zoom else ""))
    return AtacDetector(model, tuple(images.shape[-2:]), zoom, device)
