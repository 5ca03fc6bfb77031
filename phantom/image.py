"""B-mode rendering of one phantom lesion: sector, gastric wall, lesion, speckle, burned-in text.

The scene is evaluated on a polar grid (depth samples x beams), as a scanner acquires it: echo level in dB
per sample, acoustic shadowing and enhancement accumulated along each beam, complex Gaussian speckle
(Rayleigh envelope) correlated over a few samples, log compression, then scan conversion to the display
grid. The lesion mask is evaluated on the display grid from the same geometry.

Acquisition never looks at the lesion: the display depth (hence the pixel size, the depth scale and the
burned-in ``D .. mm``), the gain, the dynamic range and the probe frequency come from the device and the
operator's preset, drawn independently of the lesion's class and size. Devices differ in gain, speckle
grain, lateral resolution and frequency (:data:`INTERNAL_DEVICES`, :func:`devices_for_centre`).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from phantom.spec import LesionSpec

__all__ = [
    "DEPTHS_MM",
    "Device",
    "GEOMETRY",
    "INTERNAL_DEVICES",
    "Geometry",
    "PhantomImage",
    "ViewParams",
    "device_for_centre",
    "devices_for_centre",
    "device_speckle",
    "draw_depth",
    "draw_view",
    "render_image",
    "render_view",
    "sector_mask",
    "speckle_noise",
]

# Display depth presets an operator keeps (mm). Drawn per study, never from the lesion.
DEPTHS_MM: tuple[int, ...] = (60, 70, 80, 90, 100)
# Wall layers from the lumen outwards: echo level (dB) and nominal thickness (mm). Layer 2 holds the
# muscularis mucosae, layer 3 is the submucosa, layer 4 the muscularis propria.
_LAYER_DB = np.array([-8.0, -30.0, -6.0, -30.0, -9.0])
_LAYER_MM = np.array([0.6, 0.7, 1.1, 1.4, 0.6])
_ORIGIN_INDEX = {"muscularis_mucosae": 1, "submucosa": 2, "muscularis_propria": 3}
_WATER_DB = -52.0
_TISSUE_DB = -17.0
_FOCUS_DB = 4.0
_CYST_DB = -55.0


@dataclass(frozen=True)
class Geometry:
    """Display geometry of the sector (pixels of the output image)."""

    rows: int = 600
    cols: int = 800
    apex_x: float = 405.0
    apex_y: float = 22.0
    r0_px: float = 26.0  # probe surface, depth 0
    r1_px: float = 546.0  # deepest sample
    half_angle_deg: float = 38.0
    n_samples: int = 420
    n_beams: int = 300

    @property
    def depth_px(self) -> float:
        return self.r1_px - self.r0_px


GEOMETRY = Geometry()


@dataclass(frozen=True)
class ViewParams:
    """How one image looks at the lesion: where, at what angle, with which depth range and gain."""

    depth_mm: float = 60.0
    lesion_depth_frac: float = 0.45  # lesion centre depth as a fraction of the displayed depth
    lateral_deg: float = 0.0
    wall_tilt_deg: float = 0.0
    wall_curvature: float = 0.0  # 1/mm
    lesion_rot_deg: float = 0.0
    cut_scale: float = 1.0  # off-centre cut planes show a smaller section
    aspect_scale: float = 1.0
    gain_db: float = 0.0
    dynamic_range_db: float = 50.0


@dataclass(frozen=True)
class Device:
    """One simulated EUS processor + probe; how it differs from the reference one.

    Attributes
    ----------
    gain_db : float
        Added to every view's gain.
    dynamic_range_db : float
        Added to every view's display dynamic range.
    psf_scale : float
        Speckle grain size relative to the reference processor (both directions).
    model : str
        Manufacturer model name (DICOM ManufacturerModelName and the burned-in device line).
    frequency_mhz : float
        Probe centre frequency: written to TransducerFrequency and burned in; a higher frequency gives a
        finer axial speckle (grain ~ 7.5 / f) and more residual depth attenuation.
    lateral_blur : float
        Lateral speckle size on top of ``psf_scale`` (beam width; > 1 is a coarser lateral resolution).
    depths_mm : tuple of int
        Depth presets this device's operators use (drawn uniformly, independently of the lesion).
    """

    gain_db: float = 0.0
    dynamic_range_db: float = 0.0
    psf_scale: float = 1.0
    model: str = "PHANTOM-EUS"
    frequency_mhz: float = 7.5
    lateral_blur: float = 1.0
    depths_mm: tuple[int, ...] = DEPTHS_MM


# The internal centre's three devices (mixed per patient, independently of the class).
INTERNAL_DEVICES: tuple[Device, ...] = (
    Device(),
    Device(gain_db=2.0, dynamic_range_db=-3.0, psf_scale=0.9, model="PHANTOM-EUS R10", frequency_mhz=10.0),
    Device(gain_db=-2.0, dynamic_range_db=4.0, psf_scale=1.15, model="PHANTOM-EUS C5", frequency_mhz=5.0,
           lateral_blur=1.25, depths_mm=(70, 80, 90, 100)),
)


def devices_for_centre(centre: str) -> tuple[Device, ...]:
    """The devices of a centre: :data:`INTERNAL_DEVICES` for ``"internal"``, two fixed others elsewhere.

    An external centre's devices differ from every internal one in gain, dynamic range, speckle grain,
    lateral resolution and frequency, so an external cohort is a real domain shift.

    Parameters
    ----------
    centre : str
        Centre name; the same name always gives the same devices.

    Returns
    -------
    tuple of Device
    """
    if centre == "internal":
        return INTERNAL_DEVICES
    rng = np.random.default_rng([zlib.crc32(centre.encode()), 0xD1])
    tag = "".join(c for c in centre.upper() if c.isalnum())[:6] or "EXT"
    out = []
    for k in range(2):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        out.append(Device(
            gain_db=sign * float(rng.uniform(2.0, 5.0)),
            dynamic_range_db=float(rng.uniform(-6.0, 6.0)),
            psf_scale=float(rng.uniform(1.2, 1.5)),
            model=f"PHANTOM-EUS {tag}{k + 1}",
            frequency_mhz=float(rng.choice([6.0, 12.0])),
            lateral_blur=float(rng.uniform(1.3, 1.6)),
        ))
    return tuple(out)


def device_for_centre(centre: str) -> Device:
    """The first (main) device of a centre (see :func:`devices_for_centre`)."""
    return devices_for_centre(centre)[0]


@dataclass
class PhantomImage:
    """One rendered B-mode image.

    Attributes
    ----------
    pixels : numpy.ndarray
        (H, W) uint8 grey image: sector, text and depth scale on black.
    mask : numpy.ndarray
        (H, W) bool lesion mask.
    sector_mask : numpy.ndarray
        (H, W) bool, True inside the imaging sector.
    mm_per_pixel : float
        Isotropic pixel size in millimetres.
    text_mask : numpy.ndarray
        (H, W) bool, True where burned-in annotation or scale marks were drawn.
    view : ViewParams
        The view this image was rendered with.
    frequency_mhz : float
        Probe frequency of the device that made it.
    """

    pixels: np.ndarray
    mask: np.ndarray
    sector_mask: np.ndarray
    mm_per_pixel: float
    text_mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))
    view: ViewParams = field(default_factory=ViewParams)
    frequency_mhz: float = 7.5


def draw_depth(rng: np.random.Generator, device: Device | None = None) -> float:
    """The depth preset of one study: uniform over the device's presets, blind to the lesion."""
    presets = (device or Device()).depths_mm
    return float(presets[int(rng.integers(0, len(presets)))])


def draw_view(rng: np.random.Generator, spec: LesionSpec, view: int, device: Device | None = None,
              depth_mm: float | None = None) -> ViewParams:
    """Draw the view parameters of image number ``view`` of a lesion.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the variation.
    spec : LesionSpec
        The lesion (its geometry is not used for any acquisition setting).
    view : int
        0 is the canonical view (lesion centred, wall level, nominal gain); other numbers vary the angle,
        position, cut plane and gain, and sometimes step the depth to a neighbouring preset.
    device : Device, optional
        The processor's gain, dynamic-range offsets and depth presets (default: the reference one).
    depth_mm : float, optional
        The study's depth preset (default: drawn with :func:`draw_depth`).

    Returns
    -------
    ViewParams
        The view.
    """
    del spec  # acquisition is blind to the lesion (see the module docstring)
    dev = device or Device()
    depth = draw_depth(rng, dev) if depth_mm is None else float(depth_mm)
    if view == 0:
        return ViewParams(
            depth_mm=depth,
            gain_db=dev.gain_db,
            dynamic_range_db=50.0 + dev.dynamic_range_db,
            lesion_rot_deg=float(rng.normal(0, 3)),
            wall_curvature=float(rng.normal(0, 0.002)),
        )
    step = int(rng.choice([-1, 0, 0, 1]))
    presets = list(dev.depths_mm)
    idx = min(range(len(presets)), key=lambda i: abs(presets[i] - depth))
    depth = float(presets[int(np.clip(idx + step, 0, len(presets) - 1))])
    return ViewParams(
        depth_mm=depth,
        lesion_depth_frac=float(rng.uniform(0.38, 0.52)),
        lateral_deg=float(rng.uniform(-9, 9)),
        wall_tilt_deg=float(rng.uniform(-18, 18)),
        wall_curvature=float(rng.normal(0, 0.004)),
        lesion_rot_deg=float(rng.normal(0, 6)),
        cut_scale=float(rng.uniform(0.85, 1.0)),
        aspect_scale=float(rng.uniform(0.9, 1.1)),
        gain_db=dev.gain_db + float(rng.normal(0, 2.0)),
        dynamic_range_db=dev.dynamic_range_db + float(rng.uniform(46, 54)),
    )


@dataclass
class _Texture:
    """A lesion's internal structure, shared by all views (normalised lesion coordinates)."""

    noise: np.ndarray  # smooth unit-variance field on [-1.3, 1.3]^2
    harmonics: np.ndarray  # (n, 3): order, amplitude, phase of the contour
    cysts: np.ndarray  # (k, 3): x, y, radius (normalised)
    foci: np.ndarray  # (k, 3): x, y, radius (mm)
    tissue_seed: int


_FIELD_N = 96
_FIELD_EXTENT = 1.3


def _texture(spec: LesionSpec) -> _Texture:
    trng = np.random.default_rng(spec.texture_seed)
    f = ndimage.gaussian_filter(trng.standard_normal((_FIELD_N, _FIELD_N)), sigma=_FIELD_N / 18)
    f = (f - f.mean()) / (f.std() + 1e-9)
    if spec.lobulated:
        orders = trng.integers(3, 7, size=3)
        amps = trng.uniform(0.05, 0.10, size=3)
    else:
        orders = trng.integers(2, 5, size=2)
        amps = trng.uniform(0.005, 0.02, size=2)
    harm = np.column_stack([orders, amps, trng.uniform(0, 2 * np.pi, size=len(orders))])
    cysts = np.zeros((0, 3))
    if spec.cystic:
        k = int(trng.integers(1, 4))
        rad = trng.uniform(0.12, 0.28, size=k)
        ang = trng.uniform(0, 2 * np.pi, size=k)
        dist = trng.uniform(0, 0.5, size=k)
        cysts = np.column_stack([dist * np.cos(ang), dist * np.sin(ang), rad])
    foci = np.zeros((0, 3))
    if spec.hyperechoic_foci:
        k = int(trng.integers(1, 4))
        ang = trng.uniform(0, 2 * np.pi, size=k)
        dist = trng.uniform(0, 0.6, size=k)
        foci = np.column_stack([dist * np.cos(ang), dist * np.sin(ang), trng.uniform(0.4, 1.0, size=k)])
    return _Texture(f, harm, cysts, foci, int(trng.integers(0, 2**31 - 1)))


def _sample_field(fld: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str = "nearest") -> np.ndarray:
    scale = (_FIELD_N - 1) / (2 * _FIELD_EXTENT)
    coords = np.stack([(y + _FIELD_EXTENT) * scale, (x + _FIELD_EXTENT) * scale])
    out: np.ndarray = ndimage.map_coordinates(fld, coords.reshape(2, -1), order=1, mode=mode)
    return out.reshape(x.shape)


@dataclass
class _Scene:
    spec: LesionSpec
    view: ViewParams
    tex: _Texture
    mm_per_px: float
    cx: float  # lesion centre, apex frame, mm
    cy: float
    a: float  # semi long axis, mm
    b: float
    wall: np.ndarray  # boundaries w_0..w_5 relative to the lesion centre (v coordinate), mm
    k: int  # origin layer index

    def wall_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.deg2rad(self.view.wall_tilt_deg)
        dx, dy = x - self.cx, y - self.cy
        u = np.cos(t) * dx + np.sin(t) * dy
        v = -np.sin(t) * dx + np.cos(t) * dy
        return u, v - self.view.wall_curvature * u * u

    def lesion_coords(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised lesion coordinates (p, q) and the signed margin (>0 inside, in lesion radii)."""
        r = np.deg2rad(self.view.lesion_rot_deg)
        p = (np.cos(r) * u + np.sin(r) * v) / self.a
        q = (-np.sin(r) * u + np.cos(r) * v) / self.b
        rho = np.hypot(p, q)
        alpha = np.arctan2(q, p)
        bound = np.ones_like(rho)
        for order, amp, phase in self.tex.harmonics:
            bound += amp * np.cos(order * alpha + phase)
        return p, q, bound - rho


def _make_scene(spec: LesionSpec, view: ViewParams, tex: _Texture, geom: Geometry) -> _Scene:
    mpp = view.depth_mm / geom.depth_px
    r_mm = geom.r0_px * mpp + view.lesion_depth_frac * view.depth_mm
    lat = np.deg2rad(view.lateral_deg)
    a = 0.5 * spec.size_mm * view.cut_scale
    b = max(0.5, a * min(1.0, spec.aspect * view.aspect_scale))
    k = _ORIGIN_INDEX[spec.layer]
    rng = np.random.default_rng(tex.tissue_seed)
    thick = _LAYER_MM * rng.uniform(0.85, 1.3) * max(1.0, view.depth_mm / 60.0) ** 0.5
    w = np.concatenate([[0.0], np.cumsum(thick)])
    mid = 0.5 * (w[k] + w[k + 1])
    shift = {"intraluminal": -0.45 * b, "extraluminal": 0.45 * b, "mixed": 0.0}[spec.growth]
    return _Scene(spec, view, tex, mpp, r_mm * np.sin(lat), r_mm * np.cos(lat), a, b, w - (mid + shift), k)


def _bump(scene: _Scene, u: np.ndarray) -> np.ndarray:
    # Half-height profile of the lesion widened a little, so the layers drape smoothly over it.
    ae = scene.a * 1.25
    return (scene.b + 0.35) * np.sqrt(np.clip(1.0 - (u / ae) ** 2, 0.0, None))


def _echo_map(scene: _Scene, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Echo level (dB) and excess attenuation (dB/mm) at points (x, y) in mm, apex frame."""
    u, v = scene.wall_frame(x, y)
    w = scene.wall
    k = scene.k
    bump = _bump(scene, u)
    inner_edge = np.minimum(w[k], -bump)  # inner boundary of the origin layer, pushed towards the lumen
    outer_edge = np.maximum(w[k + 1], bump)
    # Undisplaced wall coordinate: layers inside the origin layer shift inwards, outer layers outwards.
    w0 = np.where(v < inner_edge, v + (w[k] - inner_edge), np.where(v > outer_edge, v - (outer_edge - w[k + 1]), 0.0))
    layer = np.searchsorted(w, w0, side="right") - 1  # -1 lumen, 0..4 wall, 5 beyond
    inside_origin = (v >= inner_edge) & (v <= outer_edge)
    layer = np.where(inside_origin, k, layer)
    db = np.full(x.shape, _TISSUE_DB)
    db = np.where(layer < 0, _WATER_DB, db)
    for i in range(5):
        db = np.where(layer == i, _LAYER_DB[i], db)
    beyond = layer >= 5
    tissue = _TISSUE_DB + 3.0 * _sample_field(scene.tex.noise.T, x / 25.0, y / 25.0 - 1.0, mode="mirror")
    db = np.where(beyond, tissue, db)

    spec = scene.spec
    p, q, margin = scene.lesion_coords(u, v)
    edge = 0.04 if spec.border_clear else 0.22
    weight = np.clip(margin / edge + 0.5, 0.0, 1.0)
    les = spec.echo_db + spec.heterogeneity_db * _sample_field(scene.tex.noise, p, q)
    atten = np.zeros(x.shape)
    for cx, cy, rad in scene.tex.cysts:
        inside = np.hypot(p - cx, q - cy) < rad
        les = np.where(inside, _CYST_DB, les)
        atten = np.where(inside & (weight > 0), -0.25, atten)  # posterior enhancement
    for fx, fy, rad_mm in scene.tex.foci:
        d_mm = np.hypot((p - fx) * scene.a, (q - fy) * scene.b)
        inside = d_mm < rad_mm
        les = np.where(inside, _FOCUS_DB, les)
        atten = np.where(inside, 6.0, atten)  # acoustic shadow behind calcification
    db = weight * les + (1 - weight) * db
    return db, atten * (weight > 0)


@functools.lru_cache(maxsize=4)
def _scan_tables(geom: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Polar sample positions (pixels from apex) and the display->polar lookup of the scan converter."""
    half = np.deg2rad(geom.half_angle_deg)
    r = np.linspace(geom.r0_px, geom.r1_px, geom.n_samples)
    th = np.linspace(-half, half, geom.n_beams)
    rr, tt = np.meshgrid(r, th, indexing="ij")
    px, py = rr * np.sin(tt), rr * np.cos(tt)
    yy, xx = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(float)
    dx, dy = xx - geom.apex_x, yy - geom.apex_y
    rad = np.hypot(dx, dy)
    ang = np.arctan2(dx, dy)
    sector = (rad >= geom.r0_px) & (rad <= geom.r1_px) & (np.abs(ang) <= half)
    ri = (rad - geom.r0_px) / (geom.r1_px - geom.r0_px) * (geom.n_samples - 1)
    bi = (ang + half) / (2 * half) * (geom.n_beams - 1)
    coords = np.stack([ri[sector], bi[sector]])
    return px, py, sector, coords, np.stack([dx, dy])


def sector_mask(geom: Geometry = GEOMETRY) -> np.ndarray:
    """(rows, cols) bool: the imaging sector of every phantom image of this geometry."""
    return _scan_tables(geom)[2].copy()


def speckle_noise(rng: np.random.Generator, geom: Geometry = GEOMETRY, psf_scale: float = 1.0,
                  lateral_scale: float | None = None) -> np.ndarray:
    """Complex Gaussian speckle on the polar grid, unit mean power, correlated over the PSF size.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the noise.
    geom : Geometry
        Sector geometry (sets the polar grid size).
    psf_scale : float
        Speckle grain size relative to the reference processor (axial; lateral too unless given).
    lateral_scale : float, optional
        Lateral grain size relative to the reference (default ``psf_scale``).

    Returns
    -------
    numpy.ndarray
        (n_samples, n_beams) complex array; its modulus is Rayleigh distributed.
    """
    lat = psf_scale if lateral_scale is None else lateral_scale
    z = rng.standard_normal((2, geom.n_samples, geom.n_beams)).astype(np.float32)
    z = ndimage.gaussian_filter(z, sigma=(0, 1.1 * psf_scale, 0.9 * lat))
    z /= np.sqrt(np.mean(z[0] ** 2 + z[1] ** 2))
    out: np.ndarray = z[0] + 1j * z[1]
    return out


def render_view(
    spec: LesionSpec,
    view: ViewParams,
    speckle: np.ndarray,
    *,
    annotations: dict[str, str] | None = None,
    geom: Geometry = GEOMETRY,
    frequency_mhz: float = 7.5,
) -> PhantomImage:
    """Render one view of a lesion with a given speckle realisation.

    Parameters
    ----------
    spec : LesionSpec
        The lesion.
    view : ViewParams
        Where the probe looks (see :func:`draw_view`).
    speckle : numpy.ndarray
        Complex speckle from :func:`speckle_noise` (cines pass partly correlated fields).
    annotations : dict of str, optional
        Burned-in text, see :func:`render_image`.
    geom : Geometry
        Display geometry.
    frequency_mhz : float
        Probe frequency: sets the residual depth attenuation the time-gain compensation leaves
        (0.02 dB/mm per MHz away from 7.5 MHz) and the burned-in frequency.

    Returns
    -------
    PhantomImage
        Pixels, lesion mask, sector mask, pixel size, text mask and the view.
    """
    tex = _texture(spec)
    scene = _make_scene(spec, view, tex, geom)
    px, py, sector, coords, dxy = _scan_tables(geom)
    mpp = scene.mm_per_px
    db, atten = _echo_map(scene, px * mpp, py * mpp)
    dr_mm = (geom.r1_px - geom.r0_px) / (geom.n_samples - 1) * mpp
    db = db - np.cumsum(atten, axis=0) * dr_mm  # shadowing / enhancement along each beam
    depth_frac = np.linspace(0, 1, geom.n_samples)[:, None]
    db = db - 3.0 * depth_frac  # imperfect time-gain compensation
    db = db - 0.02 * (frequency_mhz - 7.5) * depth_frac * view.depth_mm
    # Reverberation just below the probe surface.
    db = np.maximum(db, -12.0 - 500.0 * depth_frac)
    amp = 10 ** (db / 20.0) * np.abs(speckle) + 10 ** (-60 / 20.0) * np.abs(speckle[::-1])
    top = 2.0 - view.gain_db  # more gain: the display window moves down, the image gets brighter
    disp = (20 * np.log10(amp + 1e-9) - (top - view.dynamic_range_db)) / view.dynamic_range_db * 255.0
    disp = np.clip(disp, 0, 255)
    img = np.zeros((geom.rows, geom.cols), dtype=np.float32)
    img[sector] = ndimage.map_coordinates(disp.astype(np.float32), coords, order=1, mode="nearest")
    pixels = np.rint(img).astype(np.uint8)

    mask = np.zeros((geom.rows, geom.cols), dtype=bool)
    # Evaluate the lesion only in its bounding box (plus margin) to keep this cheap.
    reach = (max(scene.a, scene.b) * 1.3 + 1.0) / mpp
    cxp, cyp = geom.apex_x + scene.cx / mpp, geom.apex_y + scene.cy / mpp
    r0, r1 = int(max(0, cyp - reach)), int(min(geom.rows, cyp + reach + 1))
    c0, c1 = int(max(0, cxp - reach)), int(min(geom.cols, cxp + reach + 1))
    u, v = scene.wall_frame(dxy[0, r0:r1, c0:c1] * mpp, dxy[1, r0:r1, c0:c1] * mpp)
    _, _, margin = scene.lesion_coords(u, v)
    mask[r0:r1, c0:c1] = margin > 0
    mask &= sector

    ann = {"freq": f"{frequency_mhz:.1f}MHz", **(annotations or {})}
    text_mask = _annotate(pixels, view, mpp, ann, geom)
    return PhantomImage(pixels, mask, sector.copy(), float(mpp), text_mask, view, float(frequency_mhz))


def _annotate(pixels: np.ndarray, view: ViewParams, mpp: float, ann: dict[str, str], geom: Geometry) -> np.ndarray:
    """Burn in annotation text and a depth scale outside the sector, as processors do; return their mask."""
    layer = Image.new("L", (geom.cols, geom.rows), 0)
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default()
    left = [ann.get("name", ""), ann.get("patient_id", ""), ann.get("date", ""), ann.get("time", "")]
    for i, line in enumerate(t for t in left if t):
        draw.text((8, 6 + 14 * i), line, fill=235, font=font)
    right = [ann.get("institution", ""), ann.get("device", ""), f"D {view.depth_mm:.0f}mm", "B-MODE"]
    for i, line in enumerate(t for t in right if t):
        draw.text((geom.cols - 8 - 6 * len(line), 6 + 14 * i), line, fill=235, font=font)
    bottom = [f"G {int(round(50 + 2 * view.gain_db))}", f"DR {view.dynamic_range_db:.0f}", ann.get("freq", "7.5MHz")]
    for i, line in enumerate(bottom):
        draw.text((8, geom.rows - 50 + 14 * i), line, fill=220, font=font)
    # Depth scale: ticks every 5 mm, labelled every 10 mm in cm, right of the sector.
    x0 = int(geom.apex_x + geom.r1_px * np.sin(np.deg2rad(geom.half_angle_deg))) + 8
    step = 5 if view.depth_mm <= 100 else 10
    for d in range(0, int(view.depth_mm) + 1, step):
        y = geom.apex_y + geom.r0_px + d / mpp
        major = d % 10 == 0
        draw.line([(x0, y), (x0 + (8 if major else 4), y)], fill=255, width=1)
        if major and d > 0:
            draw.text((x0 + 11, y - 5), f"{d // 10}", fill=255, font=font)
    draw.line([(x0, geom.apex_y + geom.r0_px), (x0, geom.apex_y + geom.r0_px + view.depth_mm / mpp)], fill=180)
    arr = np.asarray(layer)
    text_mask = arr > 0
    pixels[text_mask] = arr[text_mask]
    return text_mask


def render_image(
    rng: np.random.Generator,
    spec: LesionSpec,
    *,
    view: int = 0,
    annotations: dict[str, str] | None = None,
    device: Device | None = None,
) -> PhantomImage:
    """Render one B-mode image of ``spec``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the view parameters and speckle.
    spec : LesionSpec
        The lesion.
    view : int
        0 for the canonical view; other numbers give a randomly varied angle, position, depth range and gain.
    annotations : dict of str, optional
        Burned-in text (keys ``name``, ``patient_id``, ``date``, ``time``, ``institution``, ``device``).
    device : Device, optional
        The processor (see :func:`device_for_centre`); default the reference one.

    Returns
    -------
    PhantomImage
        Pixels, lesion mask, sector mask and pixel size.
    """
    dev = device or Device()
    params = draw_view(rng, spec, view, dev)
    return render_view(spec, params, device_speckle(rng, dev), annotations=annotations,
                       frequency_mhz=dev.frequency_mhz)


def device_speckle(rng: np.random.Generator, device: Device, geom: Geometry = GEOMETRY) -> np.ndarray:
    """Speckle as ``device`` makes it: axial grain ~ psf_scale * 7.5 / f, lateral ~ psf_scale * lateral_blur."""
    return speckle_noise(rng, geom, psf_scale=device.psf_scale * 7.5 / device.frequency_mhz,
                         lateral_scale=device.psf_scale * device.lateral_blur)

