"""Image quality metrics in numpy: PSNR, SSIM and MS-SSIM (Wang et al.; 11x11 Gaussian, sigma 1.5)."""

from __future__ import annotations

import numpy as np

DATA_RANGE = 255.0
_K1, _K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE**2 / mse))


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (H, W, C) float64."""
    from numpy.lib.stride_tricks import sliding_window_view

    out = np.tensordot(sliding_window_view(image, len(kernel), axis=0), kernel, axes=([-1], [0]))
    return np.tensordot(sliding_window_view(out, len(kernel), axis=1), kernel, axes=([-1], [0]))


def _ssim_parts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel = _gaussian()
    c1, c2 = (_K1 * DATA_RANGE) ** 2, (_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _filter(x, kernel), _filter(y, kernel)
    sxx = _filter(x * x, kernel) - mu_x**2
    syy = _filter(y * y, kernel) - mu_y**2
    sxy = _filter(x * y, kernel) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * cs, cs


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM over RGB channels (images as HxWx3 uint8)."""
    ssim_map, _ = _ssim_parts(np.asarray(reference, np.float64), np.asarray(test, np.float64))
    return float(ssim_map.mean())


def _halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """5-scale MS-SSIM; needs sides >= 176 (11 px at the coarsest scale)."""
    x, y = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if min(x.shape[:2]) < 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1):
        return float("nan")
    values = []
    for level in range(len(MS_SSIM_WEIGHTS)):
        ssim_map, cs = _ssim_parts(x, y)
        last = level == len(MS_SSIM_WEIGHTS) - 1
        values.append(max(float((ssim_map if last else cs).mean()), 0.0))
        x, y = _halve(x), _halve(y)
    return float(np.prod(np.array(values) ** MS_SSIM_WEIGHTS))
