"""Malformed manifests and bundles given to ``eusdx train``, ``evaluate`` and ``worker``: a one-line
error, a non-zero exit, no traceback (in-process through ``cli.main.main`` where the
command ends by itself, so an unhandled exception escapes and fails the test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import TEST_AUDIT_SECRET, bundle_trust_env

HEADER = ("image_path,frame,seg_path,label,patient_id,lesion_id,centre,study_uid,series_uid,"
          "sop_uid,layer,size_mm,echo_pattern")
ROW = ("studies/1.2.3/1.2.3.4.dcm,0,,GIST,P0001,LES-1,internal,1.2.3,1.2.3.1,1.2.3.4,"
       "muscularis_propria,32.1,homogeneous")

MANIFESTS: dict[str, bytes] = {
    "empty": b"",
    "header-only": HEADER.encode() + b"\n",
    "missing-columns": b"image_path,label\nx.dcm,GIST\n",
    "binary-junk": bytes(range(256)) * 8,
    "nul-bytes": (HEADER + "\n" + ROW.replace("GIST", "GI\x00ST") + "\n").encode(),
    "bad-label": (HEADER + "\n" + ROW.replace("GIST", "schwannoma") + "\n").encode(),
    "bad-number": (HEADER + "\n" + ROW.replace("32.1", "big") + "\n").encode(),
    "missing-image": (HEADER + "\n" + ROW + "\n" + ROW.replace("LES-1", "LES-2")
                      .replace("GIST", "leiomyoma").replace("P0001", "P0002") + "\n").encode(),
    "ragged": (HEADER + "\n" + ROW + ",extra,fields\n1,2\n").encode(),
    "utf16": (HEADER + "\n" + ROW + "\n").encode("utf-16"),
    "path-escape": (HEADER + "\n" + ROW.replace("studies/1.2.3/1.2.3.4.dcm", "../../../etc/passwd")
                    + "\n").encode(),
    "huge-field": (HEADER + "\n" + ROW.replace("P0001", "P" * 2_000_000) + "\n").encode(),
}


def _bundles(root: Path, good: Path | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    out["missing"] = root / "nope"
    empty = root / "empty"
    empty.mkdir()
    out["empty-folder"] = empty
    a_file = root / "a-file"
    a_file.write_text("not a folder")
    out["a-file"] = a_file
    junk = root / "junk"
    junk.mkdir()
    for name in ("manifest.json", "config.json", "metrics.json", "models.skops"):
        (junk / name).write_bytes(b"\x80\x04junk{" * 10)
    out["junk-files"] = junk
    if good is not None:
        # what evaluate reads (evaluation/) and what the worker loads (the bundle files)
        for name in ("models.skops", "manifest.json", "config.json", "metrics.json",
                     "evaluation/predictions.csv", "evaluation/thresholds.json"):
            broken = root / f"broken-{name.replace('/', '-')}"
            shutil.copytree(good, broken, symlinks=True)
            target = broken / name
            data = target.read_bytes()
            target.unlink()
            target.write_bytes(data[: len(data) // 3] + b"\x00\xff")  # truncated, junk tail
            out[f"truncated-{name}"] = broken
    return out


def _one_line_error(rc: int, err: str, *, only_line: bool = True) -> None:
    """Non-zero exit, no traceback, the error as one ``eusdx: error:`` line (the last one; with
    ``only_line`` also the only one: a daemon may log its start-up before failing)."""
    assert rc != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("eusdx: error:"), err[-2000:]
    if only_line:
        assert len(lines) == 1, err[-2000:]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_train_rejects_malformed_manifest(name: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(MANIFESTS[name])
    rc = main(["train", "--fast", "--quiet", "--device", "cpu", "-m", str(manifest),
               "-o", str(tmp_path / "out")])
    _one_line_error(rc, capsys.readouterr().err)


@pytest.mark.slow
def test_evaluate_rejects_malformed_bundles(tmp_path: Path, tiny_bundle: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in bundle_trust_env(tiny_bundle).items():
        monkeypatch.setenv(key, value)
    for name, bundle in _bundles(tmp_path, tiny_bundle).items():
        if name.startswith("truncated-") and "evaluation" not in name and "metrics" not in name:
            continue  # files evaluate does not read
        rc = main(["evaluate", "--bundle", str(bundle), "-o", str(tmp_path / f"rep-{name}")])
        err = capsys.readouterr().err
        _one_line_error(rc, err)


@pytest.mark.slow
def test_worker_rejects_malformed_bundle_at_start(tmp_path: Path, tiny_bundle: Path) -> None:
    """``eusdx worker`` (embedded: no broker) with a bundle it cannot load: it must say so in one
    line and exit, not start consuming studies it can never analyse."""
    for name, bundle in _bundles(tmp_path, tiny_bundle).items():
        if "evaluation" in name:
            continue  # the worker does not read the evaluation
        env = dict(os.environ, EUSDX_BUNDLE=str(bundle), EUSDX_QUEUE_DIR=str(tmp_path / "q"),
                   EUSDX_SPOOL_DIR=str(tmp_path / "spool"),
                   EUSDX_DATABASE_URL=f"sqlite:///{tmp_path}/audit.db", EUSDX_BROKER_URL="",
                   EUSDX_AUDIT_HMAC_SECRET=TEST_AUDIT_SECRET, **bundle_trust_env(tiny_bundle))
        try:
            proc = subprocess.run([str(Path(sys.executable).with_name("eusdx")), "worker"],
                                  env=env, capture_output=True, text=True, timeout=25)
        except subprocess.TimeoutExpired:
            pytest.fail(f"eusdx worker kept running with an unloadable bundle ({name})")
        _one_line_error(proc.returncode, proc.stderr, only_line=False)
