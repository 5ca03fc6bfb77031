"""What a PACS-side reader gets out of our SR file: the lesion answer, image probabilities, version."""

from __future__ import annotations

from pathlib import Path

import pydicom

from tests.worker.test_sr_builder import _second_instance, _study
from tests.worker._helpers import us_image
from worker.sr.builder import build_report
from worker.sr.reader import summarize_report


def test_summary_reads_lesion_answer_from_the_written_file(tmp_path: Path) -> None:
    src = us_image()
    sr = build_report(_study([src, _second_instance(src)], [0.9, 0.3]))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    summary = summarize_report(pydicom.dcmread(path))
    assert summary.study_uid == src.StudyInstanceUID
    assert summary.label == "GIST"  # mean 0.6 >= 0.5
    assert abs(summary.probability - 0.6) < 1e-6
    assert sorted(summary.image_probabilities) == [0.3, 0.9]
    assert summary.algorithm_version == "2026.11.26-ab12cd34"
    assert any("not for clinical use" in n.lower() for n in summary.notices)


def test_leiomyoma_label_is_read_back() -> None:
    src = us_image()
    summary = summarize_report(build_report(_study([src], [0.2])))
    assert summary.label == "leiomyoma"
    assert abs(summary.probability - 0.2) < 1e-6


def test_webhook_channel_reads_the_same_lesion_answer_as_the_reader() -> None:
    """dicom_node cannot import worker: its webhook parses the SR itself and must agree (P(GIST) in %)."""
    from dicom_node.channels.webhook import _lesion_result

    src = us_image()
    sr = build_report(_study([src, _second_instance(src)], [0.9, 0.7]))
    probability, label, version = _lesion_result(sr)
    summary = summarize_report(sr)
    assert probability == summary.probability and abs(probability - 0.8) < 1e-6
    assert label == "Gastrointestinal stromal tumor" and version == summary.algorithm_version
