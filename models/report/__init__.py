"""Paper-style evaluation report: tables, figures, SHAP and an HTML page built from prediction files.

Entry point: :func:`build_report`; inputs from :func:`load_bundle_inputs` (layout in
:mod:`models.report.inputs`), SHAP input format in :mod:`models.report.explain`.
"""

from __future__ import annotations

from models.report.build import ReportResult, build_report
from models.report.explain import ShapEntry, ShapResult, explain_model, save_shap_outputs
from models.report.inputs import (
    CLASSIFIERS,
    MODALITIES,
    PREDICTION_COLUMNS,
    SPLITS,
    EvaluationInputs,
    ModelPredictions,
    ReportInputError,
    load_bundle_inputs,
    read_predictions,
    read_synthetic_flag,
    read_thresholds,
)
from models.report.tables import compute_report_data

__all__ = [
    "CLASSIFIERS",
    "MODALITIES",
    "PREDICTION_COLUMNS",
    "SPLITS",
    "EvaluationInputs",
    "ModelPredictions",
    "ReportInputError",
    "ReportResult",
    "ShapEntry",
    "ShapResult",
    "build_report",
    "compute_report_data",
    "explain_model",
    "load_bundle_inputs",
    "read_predictions",
    "read_synthetic_flag",
    "read_thresholds",
    "save_shap_outputs",
]
