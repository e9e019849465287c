import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from _helpers import smooth_image
from spikeir.evaluate import evaluate_denoise
from spikeir.models import SpikingDnCNN


class Shrink(torch.nn.Module):
    """A fixed, known restoration: pull the noisy image halfway to 0.5."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return 0.5 * x + 0.25 + self.w


def test_protocol_matches_independent_computation():
    images = [("a", smooth_image(0)), ("b", smooth_image(1, 40, 33))]
    res = evaluate_denoise(Shrink(), images, sigma=25)
    for (name, clean), row in zip(images, res["images"]):
        np.random.seed(0)
        noisy = clean / 255.0 + np.random.normal(0, 25 / 255.0, clean.shape)
        out = np.uint8(np.clip(0.5 * noisy.astype(np.float32) + 0.25, 0, 1) * 255.0 + 0.5)
        assert row["name"] == name
        assert abs(row["psnr"] - peak_signal_noise_ratio(clean, out, data_range=255)) < 1e-9
        ref_ssim = structural_similarity(clean.astype(float), out.astype(float), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=255)
        assert abs(row["ssim"] - ref_ssim) < 1e-9
        assert row["firing_rate"] is None
    assert abs(res["mean"]["psnr"] - np.mean([r["psnr"] for r in res["images"]])) < 1e-12


def test_spiking_model_reports_firing_rate():
    res = evaluate_denoise(SpikingDnCNN(depth=3, width=4, T=2), [("a", smooth_image(0))], sigma=15)
    assert 0 < res["images"][0]["firing_rate"] < 1
