"""Phantom lesion statistics against paper 002 (Guo et al. 2024), Table 1.

Reference values are typed in from the paper here, not read from the phantom's own table.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import truncnorm

from phantom import DEFAULT_DIFFICULTY, LesionSpec, sample_lesion

N = 500
# Paper 002, Table 1.
SIZE = {"GIST": (23.88, 13.12), "leiomyoma": (9.63, 6.21)}
HETEROGENEOUS = {"GIST": 40 / 69, "leiomyoma": 12 / 73}
FROM_MP = {"GIST": 66 / 69, "leiomyoma": 45 / 73}
FROM_MM = {"GIST": 0 / 69, "leiomyoma": 26 / 73}
CYSTIC = {"GIST": 6 / 69, "leiomyoma": 1 / 73}


def _draw(label: str, difficulty: float, seed: int) -> list[LesionSpec]:
    rng = np.random.default_rng(seed)
    return [sample_lesion(rng, label, difficulty) for _ in range(N)]


@pytest.fixture(scope="module")
def lesions() -> dict[str, list[LesionSpec]]:
    return {"GIST": _draw("GIST", DEFAULT_DIFFICULTY, 11), "leiomyoma": _draw("leiomyoma", DEFAULT_DIFFICULTY, 12)}


def _blend(p_own: dict[str, float], label: str, difficulty: float) -> float:
    other = "leiomyoma" if label == "GIST" else "GIST"
    return (1 - difficulty / 2) * p_own[label] + difficulty / 2 * p_own[other]


def _within_3se(values: list[bool], p: float) -> None:
    se = math.sqrt(max(p * (1 - p), 1e-4) / len(values))
    assert abs(float(np.mean(values)) - p) < 3 * se + 1e-9, (np.mean(values), p)


@pytest.mark.parametrize("label", ["GIST", "leiomyoma"])
def test_size_matches_truncated_table1_normal(lesions: dict[str, list[LesionSpec]], label: str) -> None:
    mean, sd = SIZE[label]
    a = (3.0 - mean) / sd
    expected_mean = truncnorm.mean(a, np.inf, loc=mean, scale=sd)
    expected_sd = truncnorm.std(a, np.inf, loc=mean, scale=sd)
    sizes = np.array([s.size_mm for s in lesions[label]])
    assert sizes.min() >= 3.0
    assert abs(sizes.mean() - expected_mean) < 3 * expected_sd / math.sqrt(N)
    assert 0.85 < sizes.std(ddof=1) / expected_sd < 1.15


def test_leiomyoma_truncation_shifts_mean_above_published(lesions: dict[str, list[LesionSpec]]) -> None:
    mean, sd = SIZE["leiomyoma"]
    assert truncnorm.mean((3.0 - mean) / sd, np.inf, loc=mean, scale=sd) > mean + 0.3


@pytest.mark.parametrize("label", ["GIST", "leiomyoma"])
def test_appearance_proportions_at_default_difficulty(lesions: dict[str, list[LesionSpec]], label: str) -> None:
    group = lesions[label]
    d = DEFAULT_DIFFICULTY
    _within_3se([s.echo_pattern == "heterogeneous" for s in group], _blend(HETEROGENEOUS, label, d))
    _within_3se([s.layer == "muscularis_propria" for s in group], _blend(FROM_MP, label, d))
    _within_3se([s.layer == "muscularis_mucosae" for s in group], _blend(FROM_MM, label, d))
    _within_3se([s.cystic for s in group], _blend(CYSTIC, label, d))


def test_cues_point_the_published_way(lesions: dict[str, list[LesionSpec]]) -> None:
    g, lm = lesions["GIST"], lesions["leiomyoma"]
    assert np.mean([s.echo_pattern == "heterogeneous" for s in g]) > np.mean(
        [s.echo_pattern == "heterogeneous" for s in lm]
    )
    assert np.mean([s.layer == "muscularis_propria" for s in g]) > np.mean(
        [s.layer == "muscularis_propria" for s in lm]
    )
    assert np.mean([s.layer == "muscularis_mucosae" for s in lm]) > np.mean(
        [s.layer == "muscularis_mucosae" for s in g]
    )
    assert np.mean([s.lobulated for s in g]) > np.mean([s.lobulated for s in lm])
    assert np.mean([s.echogenicity == "hypoechoic" for s in lm]) > 0.8


def test_zero_difficulty_reproduces_table1() -> None:
    g, lm = _draw("GIST", 0.0, 21), _draw("leiomyoma", 0.0, 22)
    _within_3se([s.echo_pattern == "heterogeneous" for s in g], HETEROGENEOUS["GIST"])
    _within_3se([s.echo_pattern == "heterogeneous" for s in lm], HETEROGENEOUS["leiomyoma"])
    assert not any(s.layer == "muscularis_mucosae" for s in g)  # 0/69 in Table 1
    _within_3se([s.layer == "muscularis_mucosae" for s in lm], FROM_MM["leiomyoma"])
    assert all(s.appearance_label == s.label for s in g + lm)


def test_full_difficulty_makes_appearance_uninformative() -> None:
    g, lm = _draw("GIST", 1.0, 31), _draw("leiomyoma", 1.0, 32)
    p_het = (HETEROGENEOUS["GIST"] + HETEROGENEOUS["leiomyoma"]) / 2
    _within_3se([s.echo_pattern == "heterogeneous" for s in g], p_het)
    _within_3se([s.echo_pattern == "heterogeneous" for s in lm], p_het)
    assert np.mean([s.size_mm for s in g]) > 2 * np.mean([s.size_mm for s in lm])  # size stays a cue


def test_same_generator_state_gives_same_lesion() -> None:
    a = sample_lesion(np.random.default_rng(5), "GIST", 0.3)
    b = sample_lesion(np.random.default_rng(5), "GIST", 0.3)
    assert a == b
    assert a.as_dict()["label"] == "GIST"


@pytest.mark.parametrize(
    ("label", "difficulty", "message"),
    [("gist", 0.5, "label must be one of"), ("GIST", -0.1, "difficulty must be in"), ("GIST", 1.5, "difficulty")],
)
def test_bad_arguments_raise(label: str, difficulty: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_lesion(np.random.default_rng(0), label, difficulty)


def test_birth_date_of_a_study_on_29_february() -> None:
    # seed 1 with 300 patients draws a study on 2024-02-29; the birth date must not crash
    import datetime as dt

    from phantom.cohort import _years_before

    assert _years_before(dt.date(2024, 2, 29), 41) == dt.date(1983, 2, 28)
    assert _years_before(dt.date(2024, 2, 29), 40) == dt.date(1984, 2, 29)
    assert _years_before(dt.date(2025, 7, 3), 50) == dt.date(1975, 7, 3)
