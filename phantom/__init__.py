"""The synthetic EUS phantom: a data generator, not part of the ML a worker loads.

GIST and leiomyoma lesions following paper 002, Table 1, rendered as B-mode images and written as real
DICOM studies plus a labelled manifest. Every number measured on its output is a phantom number (a
software check), never a clinical claim.

Modules: :mod:`phantom.spec` (lesions), :mod:`phantom.image` (B-mode rendering), :mod:`phantom.dicom`
(DICOM encoding), :mod:`phantom.cohort` (cohorts, manifest; the public API re-exported here).

Layer: imports numpy/scipy/PIL/pydicom/highdicom only, no other package of this repository; the CLI,
tests and benches import it, ``models`` never does.
"""

from __future__ import annotations

from phantom.cohort import (
    DEFAULT_DIFFICULTY,
    INTERNAL_DEVICES,
    LABELS,
    LAYERS,
    MANIFEST_COLUMNS,
    TABLE1,
    Device,
    LesionSpec,
    PhantomImage,
    StudyPlan,
    ViewParams,
    device_for_centre,
    devices_for_centre,
    generate_cohort,
    plan_cohort,
    render_cine,
    render_image,
    sample_lesion,
)

__all__ = [
    "DEFAULT_DIFFICULTY",
    "LABELS",
    "LAYERS",
    "MANIFEST_COLUMNS",
    "TABLE1",
    "INTERNAL_DEVICES",
    "Device",
    "LesionSpec",
    "PhantomImage",
    "StudyPlan",
    "ViewParams",
    "device_for_centre",
    "devices_for_centre",
    "generate_cohort",
    "plan_cohort",
    "render_cine",
    "render_image",
    "sample_lesion",
]
