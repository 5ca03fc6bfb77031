"""Lesion specifications for the synthetic EUS phantom, drawn from paper 002, Table 1.

Guo et al. 2024 (Chin J Dig Endosc 41(6)), Table 1, 69 GISTs and 73 leiomyomas (LM). The counts below are
copied from that table; every categorical attribute of a phantom lesion is drawn with these frequencies.

The size (long axis) always follows the lesion's own class, truncated normal with a 3 mm floor. Every other
attribute (origin layer, echo pattern, echo level, shape, margins, cystic spaces, hyperechoic foci, growth
direction) is drawn from the frequencies of an *appearance class*: the lesion's own class with probability
``1 - difficulty / 2``, the other class otherwise. ``difficulty = 0`` gives Table 1 exactly; ``difficulty = 1``
leaves only size as a cue. This is how class overlap is tuned without touching the published size overlap.

``size_matched=True`` removes size as a cue: both classes draw the long axis from one distribution, the
equal mixture of the two classes' truncated normals, leaving only echo and texture cues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "LABELS",
    "LAYERS",
    "TABLE1",
    "DEFAULT_DIFFICULTY",
    "MIN_SIZE_MM",
    "LesionSpec",
    "sample_lesion",
    "sample_size",
]

LABELS: tuple[str, str] = ("GIST", "leiomyoma")
# Origin layers as the paper names them (muscularis mucosae sits in wall layer 2, submucosa is layer 3,
# muscularis propria layer 4 of the five EUS layers).
LAYERS: tuple[str, str, str] = ("muscularis_mucosae", "submucosa", "muscularis_propria")
MIN_SIZE_MM = 3.0
# Chosen so that a logistic regression on size, mean and std of the lesion lands near the paper's AUC
# (0.80-0.90) instead of at 1.0; see the module docstring for what the number means.
DEFAULT_DIFFICULTY = 0.5

# Paper 002, Table 1: counts per class (GIST n=69, LM n=73), size as mean and SD in mm.
TABLE1: dict[str, dict[str, Any]] = {
    "GIST": {
        "n": 69,
        "size_mean": 23.88,
        "size_sd": 13.12,
        "layer": {"muscularis_mucosae": 0, "submucosa": 3, "muscularis_propria": 66},
        "echo_pattern": {"homogeneous": 29, "heterogeneous": 40},
        "echogenicity": {"hypoechoic": 58, "mid_low": 9, "mixed": 2, "hyperechoic": 0},
        "shape": {"round": 32, "oval": 20, "fusiform": 5, "irregular": 12},
        "lobulated": {False: 67, True: 2},
        "growth": {"intraluminal": 51, "extraluminal": 14, "mixed": 4},
        "border_clear": {True: 61, False: 8},
        "calcification": {False: 66, True: 3},
        "cystic": {False: 63, True: 6},
    },
    "leiomyoma": {
        "n": 73,
        "size_mean": 9.63,
        "size_sd": 6.21,
        "layer": {"muscularis_mucosae": 26, "submucosa": 2, "muscularis_propria": 45},
        "echo_pattern": {"homogeneous": 61, "heterogeneous": 12},
        "echogenicity": {"hypoechoic": 70, "mid_low": 1, "mixed": 2, "hyperechoic": 0},
        "shape": {"round": 20, "oval": 26, "fusiform": 22, "irregular": 5},
        "lobulated": {False: 72, True: 1},
        "growth": {"intraluminal": 71, "extraluminal": 1, "mixed": 1},
        "border_clear": {True: 72, False: 1},
        "calcification": {False: 72, True: 1},
        "cystic": {False: 72, True: 1},
    },
}

# Short/long axis ratio range per shape (the paper gives shape names only).
_ASPECT = {"round": (0.85, 1.0), "oval": (0.6, 0.8), "fusiform": (0.35, 0.55), "irregular": (0.55, 0.9)}


@dataclass(frozen=True)
class LesionSpec:
    """One phantom lesion: what it is and how it looks, independent of any view.

    Attributes
    ----------
    label : str
        Pathology, ``"GIST"`` or ``"leiomyoma"``.
    size_mm : float
        Long axis in millimetres.
    layer : str
        Origin layer, one of :data:`LAYERS`.
    echo_pattern : str
        ``"homogeneous"`` or ``"heterogeneous"``.
    lobulated : bool
        Lobulated / irregular contour.
    cystic : bool
        Contains anechoic cystic spaces.
    hyperechoic_foci : bool
        Contains bright foci (calcification) with acoustic shadows.
    echogenicity : str
        ``"hypoechoic"``, ``"mid_low"`` or ``"mixed"``.
    shape : str
        ``"round"``, ``"oval"``, ``"fusiform"`` or ``"irregular"``.
    aspect : float
        Short/long axis ratio.
    growth : str
        ``"intraluminal"``, ``"extraluminal"`` or ``"mixed"``.
    border_clear : bool
        Sharp margin (``False``: blurred margin).
    echo_db : float
        Mean echo level of the lesion relative to the display reference, dB.
    heterogeneity_db : float
        Amplitude (dB) of the low-frequency texture inside the lesion.
    appearance_label : str
        The class whose Table 1 frequencies the appearance was drawn from (equals ``label`` unless the
        difficulty blend swapped it). Kept for analysis; never written into DICOM.
    texture_seed : int
        Seed of the lesion's internal structure, shared by all its views.
    """

    label: str
    size_mm: float
    layer: str
    echo_pattern: str
    lobulated: bool
    cystic: bool
    hyperechoic_foci: bool
    echogenicity: str = "hypoechoic"
    shape: str = "oval"
    aspect: float = 0.7
    growth: str = "intraluminal"
    border_clear: bool = True
    echo_db: float = -32.0
    heterogeneity_db: float = 1.5
    appearance_label: str = ""
    texture_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (for manifests and logs)."""
        return asdict(self)


def _choice(rng: np.random.Generator, counts: dict[Any, int]) -> Any:
    keys = list(counts)
    weights = np.array([counts[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, low: float) -> float:
    # Rejection is cheap here: at most ~7 % of leiomyoma draws fall below 3 mm.
    while True:
        x = float(rng.normal(mean, sd))
        if x >= low:
            return x


def sample_size(rng: np.random.Generator, label: str, *, size_matched: bool = False) -> float:
    """Long axis (mm) of a lesion of class ``label``: its own Table 1 truncated normal, or with
    ``size_matched`` the 50:50 mixture of both classes' (the same distribution for either class)."""
    if size_matched:
        label = LABELS[int(rng.random() < 0.5)]
    t = TABLE1[label]
    return _truncated_normal(rng, t["size_mean"], t["size_sd"], MIN_SIZE_MM)


def sample_lesion(rng: np.random.Generator, label: str, difficulty: float = DEFAULT_DIFFICULTY, *,
                  size_matched: bool = False) -> LesionSpec:
    """Draw one lesion of class ``label`` following paper 002, Table 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the result depends only on its state.
    label : str
        ``"GIST"`` or ``"leiomyoma"``.
    difficulty : float
        Class overlap in [0, 1]: the probability that the appearance is drawn from the other class is
        ``difficulty / 2``. Size follows ``label`` (see ``size_matched``).
    size_matched : bool
        Draw the size from one distribution shared by both classes (:func:`sample_size`).

    Returns
    -------
    LesionSpec
        The lesion.

    Raises
    ------
    ValueError
        If ``label`` is unknown or ``difficulty`` is outside [0, 1].
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    size = sample_size(rng, label, size_matched=size_matched)

    other = LABELS[1] if label == LABELS[0] else LABELS[0]
    app_label = other if rng.random() < difficulty / 2.0 else label
    t = TABLE1[app_label]

    layer = _choice(rng, t["layer"])
    pattern = _choice(rng, t["echo_pattern"])
    echogenicity = _choice(rng, t["echogenicity"])
    shape = _choice(rng, t["shape"])
    lobulated = bool(_choice(rng, t["lobulated"])) or shape == "irregular"
    growth = _choice(rng, t["growth"])
    if layer != "muscularis_propria" and growth == "extraluminal":
        # A lesion of the inner layers cannot grow through the muscularis propria into the serosa.
        growth = "intraluminal"
    border_clear = bool(_choice(rng, t["border_clear"]))
    foci = bool(_choice(rng, t["calcification"]))
    cystic = bool(_choice(rng, t["cystic"]))

    lo, hi = _ASPECT[shape]
    aspect = float(rng.uniform(lo, hi))
    echo_db = {"hypoechoic": -33.0, "mid_low": -27.0, "mixed": -29.0}[echogenicity] + float(rng.normal(0, 1.5))
    if pattern == "heterogeneous" or echogenicity == "mixed":
        het = float(rng.uniform(4.0, 8.0))
    else:
        het = float(rng.uniform(0.5, 2.0))
    return LesionSpec(
        label=label,
        size_mm=round(size, 2),
        layer=layer,
        echo_pattern=pattern,
        lobulated=lobulated,
        cystic=cystic,
        hyperechoic_foci=foci,
        echogenicity=echogenicity,
        shape=shape,
        aspect=round(aspect, 3),
        growth=growth,
        border_clear=border_clear,
        echo_db=round(echo_db, 2),
        heterogeneity_db=round(het, 2),
        appearance_label=app_label,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
