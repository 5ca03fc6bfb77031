"""``eusdx phantom``: writes a cohort, rejects bad arguments with one line and exit code 2."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main

EUSDX = Path(sys.executable).with_name("eusdx")


def test_writes_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    code = main(["phantom", "--patients", "2", "--out", str(out), "--seed", "5", "--difficulty", "0.2", "--quiet"])
    assert code == 0
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["patient_id"] for r in rows}) == 2
    assert "manifest.csv (2 patients" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "0"], "--patients must be >= 1"),
        (["--patients", "-3"], "--patients must be >= 1"),
        (["--patients", "x"], "Invalid value for '--patients'"),
        (["--difficulty", "1.5"], "--difficulty must be in [0, 1]"),
        (["--difficulty", "-0.1"], "--difficulty must be in [0, 1]"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--gist-fraction", "2"], "--gist-fraction must be in [0, 1]"),
        (["--centre", "two words"], "centre must be"),
        (["--layer", "submucosa"], "No such option: --layer"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["phantom", "--out", str(tmp_path / "x"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("eusdx: error: ") and message in err
    assert not (tmp_path / "x" / "manifest.csv").exists()


def test_missing_out_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phantom", "--patients", "1"]) == 2
    assert "--out" in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["phantom", "--patients", "1", "--out", str(f), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_installed_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "sub"
    res = subprocess.run(
        [str(EUSDX), "phantom", "--patients", "1", "--out", str(out), "--seed", "2", "--centre", "ext1"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "phantom" in res.stderr and "100%" in res.stderr  # tqdm progress bar on stderr
    assert (out / "manifest.csv").exists()
    assert all(r["centre"] == "ext1" for r in csv.DictReader((out / "manifest.csv").open(encoding="utf-8")))
    bad = subprocess.run([str(EUSDX), "phantom", "--patients", "0", "--out", str(out)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["eusdx: error: --patients must be >= 1, got 0"]


def test_size_matched_flag_reaches_the_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phantom import plan_cohort

    out = tmp_path / "m"
    assert main(["phantom", "--patients", "2", "--out", str(out), "--seed", "4", "--size-matched", "--quiet"]) == 0
    assert "size-matched" in capsys.readouterr().out
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        sizes = {r["patient_id"]: float(r["size_mm"]) for r in csv.DictReader(fh)}
    expected = {p.patient_id: p.spec.size_mm for p in plan_cohort(2, 4, size_matched=True)}
    assert sizes == pytest.approx(expected)
    assert expected != {p.patient_id: p.spec.size_mm for p in plan_cohort(2, 4)}
