"""Small synthetic EUS-like frames drawn with numpy (no phantom needed): a fan, speckle, a bright wall
layer, a dark round lesion in it, burned-in text blocks and depth ticks outside the fan."""

from __future__ import annotations

import numpy as np


def fan_frame(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (300, 400),
    lesion_radius: float = 28.0,
    lesion_centre: tuple[float, float] = (150.0, 200.0),
    rgb: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pixels, sector mask, lesion mask) in frame coordinates."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    apex = (10.0, w / 2)
    r = np.hypot(yy - apex[0], xx - apex[1])
    ang = np.degrees(np.arctan2(xx - apex[1], yy - apex[0]))
    sector = (r > 12) & (r < h - 20) & (np.abs(ang) < 40)
    img = rng.gamma(2.0, 35.0, size=shape)  # speckle-like
    img[(r < 90)] *= 0.08  # anechoic water in front of the transducer
    wall = (np.abs(yy - lesion_centre[0]) < 18)
    img[wall] *= 1.6
    lesion = np.hypot(yy - lesion_centre[0], xx - lesion_centre[1]) < lesion_radius
    img[lesion] *= 0.3
    img = np.clip(img, 0, 255)
    img[~sector] = 0
    img[5:15, 5:60] = 230  # burned-in text blocks outside the fan
    img[5:15, w - 70 : w - 8] = 230
    for y in range(30, h - 30, 20):  # depth-scale ticks
        img[y, w - 20 : w - 12] = 255
    px = img.astype(np.uint8)
    if rgb:
        px = np.stack([px, px, px], axis=-1)
    return px, sector, lesion
