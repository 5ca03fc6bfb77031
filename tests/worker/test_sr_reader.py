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


def test_result_channels_read_the_same_lesion_answer_as_the_reader() -> None:
    """dicom_node cannot import worker: its channels (webhook, HL7) parse the SR themselves and must agree."""
    from dicom_node.channels.sr_result import read_result

    src = us_image()
    sr = build_report(_study([src, _second_instance(src)], [0.9, 0.7]))
    result = read_result(sr)
    summary = summarize_report(sr)
    assert result.probability == summary.probability and abs(result.probability - 0.8) < 1e-6
    assert result.finding is not None and result.finding[2] == "Gastrointestinal stromal tumor"
    assert result.algorithm_version == summary.algorithm_version
