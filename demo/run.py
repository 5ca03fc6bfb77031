"""The demo, step by step, with the real commands as separate processes.

1. ``eusdx phantom``: a training cohort and, from another seed, the studies the "PACS" forwards;
2. ``eusdx train --fast``: a bundle (skipped when the same cohort already trained one);
3. ``eusdx evaluate``: the paper-style report of that bundle;
4. a PACS stand-in (DCMTK ``storescp``) and ``eusdx serve`` on embedded defaults (SQLite, no Redis);
5. each study is sent with DCMTK ``storescu`` as an auto-forward rule would, *without* the phantom's
   DICOM SEG (a study from a PACS has none, so the automatic ROI runs), and the SRs that come back to the
   PACS are read and tabulated with the true label from the manifest.

The demo prints how its bundle was trained (budget) and how its backbone was initialised.

Every child is in its own session and is stopped (SIGTERM, then SIGKILL) on exit, including Ctrl-C.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pydicom
from pydicom.uid import SegmentationStorage

from demo.peers import PacsReceiver, free_port, send_study, terminate, wait_listening
from eusdx.durable import atomic_write_json, sha256_file
from eusdx.errors import EusdxError

__all__ = ["DemoOptions", "DemoError", "StudyOutcome", "audit_hint", "run_demo"]

SR_MODALITY = "SR"
#: Not forwarded: the phantom's ground-truth lesion outlines (a hospital's studies come without them).
WITHHELD_SOP_CLASSES: tuple[str, ...] = (str(SegmentationStorage),)


class DemoError(EusdxError):
    """A demo step failed; the message names the step and where its log is."""


@dataclass
class DemoOptions:
    workdir: Path = Path("./var/demo")
    train_patients: int = 40
    send_patients: int = 6
    seed: int = 1
    quiet_seconds: float = 3.0
    timeout: float = 600.0
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class StudyOutcome:
    study_uid: str
    accession: str
    true_label: str
    predicted: str | None = None
    probability: float | None = None
    latency_s: float | None = None
    sr_path: Path | None = None


def _eusdx(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def audit_hint(database: Path) -> str:
    """A shell command that lists the demo's studies and works as printed: the ``eusdx`` next to
    this interpreter (``.venv/bin/eusdx``, which is not on PATH unless the venv is activated), or
    ``python -m cli.main`` when there is no such script."""
    script = Path(sys.executable).parent / "eusdx"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]
    url = f"sqlite:///{database.resolve()}"
    return " ".join([f"EUSDX_DATABASE_URL={shlex.quote(url)}", *map(shlex.quote, command), "audit", "studies"])


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update({"EUSDX_LOG_LEVEL": "WARNING", **extra})
    return env


def _step(out: TextIO, text: str) -> None:
    print(f"\n==> {text}", file=out, flush=True)


def _run_step(name: str, cmd: list[str], log: Path, **env: str) -> None:
    """Run one CLI step; its progress bars go to the terminal, its log lines to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(cmd, env=_child_env(**env), stdout=fh, stderr=None)
    if proc.returncode != 0:
        raise DemoError(f"{name} failed with exit code {proc.returncode}; see {log}")


def _cohort(opts: DemoOptions, name: str, patients: int, seed: int, centre: str) -> Path:
    folder = opts.workdir / name
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        print(f"    cached: {manifest}", file=opts.out)
        return manifest
    _run_step(f"eusdx phantom ({name})",
              _eusdx("phantom", "--patients", str(patients), "--seed", str(seed), "--centre", centre,
                     "--out", str(folder)),
              opts.workdir / "logs" / f"phantom-{name}.log")
    return manifest


def _signing_keys(opts: DemoOptions) -> tuple[Path, Path]:
    """The demo's own bundle signing key pair (made once per work folder): the demo trusts the
    bundles it trains, exactly as a hospital trusts its vendor's key."""
    private, public = opts.workdir / "keys" / "bundle-signing.pem", opts.workdir / "keys" / "bundle-signing.pub.pem"
    if not public.is_file():
        _run_step("eusdx bundle keygen", _eusdx("bundle", "keygen", "--private", str(private),
                                                "--public", str(public)),
                  opts.workdir / "logs" / "keygen.log")
    return private, public


def _bundle(opts: DemoOptions, manifest: Path) -> Path:
    bundles = opts.workdir / "bundles"
    stamp = bundles / "demo-stamp.json"
    private, public = _signing_keys(opts)
    wanted = {"manifest_sha256": sha256_file(manifest), "options": ["--fast"],
              "signer_sha256": sha256_file(public)}
    current = bundles / "current"
    if stamp.is_file() and current.exists() and json.loads(stamp.read_text()) == wanted:
        print(f"    cached: {current.resolve()}", file=opts.out)
        return current
    _run_step("eusdx train", _eusdx("train", "--manifest", str(manifest), "--out", str(bundles), "--fast",
                                    "--signing-key", str(private)),
              opts.workdir / "logs" / "train.log")
    atomic_write_json(stamp, wanted)
    return current


def _report(opts: DemoOptions, bundle: Path) -> Path:
    out = opts.workdir / "report"
    version_file = out / "bundle-version.txt"
    version = bundle.resolve().name
    if (out / "report.html").is_file() and version_file.is_file() and version_file.read_text() == version:
        print(f"    cached: {out / 'report.html'}", file=opts.out)
        return out / "report.html"
    _run_step("eusdx evaluate", _eusdx("evaluate", "--bundle", str(bundle), "--out", str(out)),
              opts.workdir / "logs" / "evaluate.log",
              EUSDX_BUNDLE_TRUSTED_KEYS=str(_signing_keys(opts)[1]))
    version_file.write_text(version)
    return out / "report.html"


def describe_bundle(bundle: Path) -> list[str]:
    """Lines saying how a bundle's networks were initialised and trained (from its config.json)."""
    try:
        config = json.loads((Path(bundle) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"bundle description unavailable ({type(exc).__name__})"]
    init = config.get("backbone_init") or {}
    init_txt = init.get("description") or "unknown (bundle predates the record)"
    if init.get("sha256"):
        init_txt += f", SHA-256 {init['sha256'][:16]}..."
    budget = config.get("training_budget") or {}
    backbone = (config.get("backbone") or {}).get("name", "unknown")
    lines = [f"model: {config.get('model_name', 'unknown')}",
             f"backbone: {backbone}, initialisation: {init_txt}"]
    if budget:
        lines.append("training budget: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in budget.items()))
    lines.append("a smoke-test bundle: far too small a budget for any accuracy claim (synthetic data)")
    return lines


def _studies(manifest: Path) -> dict[str, StudyOutcome]:
    studies: dict[str, StudyOutcome] = {}
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            uid = row["study_uid"]
            if uid not in studies:
                studies[uid] = StudyOutcome(study_uid=uid, accession="", true_label=row["label"])
    return studies


def _start_serve(opts: DemoOptions, bundle: Path, pacs: PacsReceiver, run_dir: Path,
                 ) -> tuple[subprocess.Popen[bytes], int, int]:
    dicom_port, http_port = free_port(), free_port()
    env = _child_env(
        EUSDX_LOG_LEVEL="INFO",
        EUSDX_DICOM_HOST="127.0.0.1",
        EUSDX_DICOM_PORT=str(dicom_port),
        EUSDX_HTTP_PORT=str(http_port),
        EUSDX_SPOOL_DIR=str(run_dir / "spool"),
        EUSDX_QUEUE_DIR=str(run_dir / "queue"),
        EUSDX_DATABASE_URL=f"sqlite:///{run_dir / 'audit.db'}",
        EUSDX_BUNDLE=str(bundle.resolve()),
        EUSDX_EXPORT_DESTINATIONS=f"{pacs.ae_title}@127.0.0.1:{pacs.port}",
        EUSDX_EXPORT_BACKOFF_SECONDS="1",
        EUSDX_STUDY_QUIET_SECONDS=str(opts.quiet_seconds),
        EUSDX_ALLOWED_AES=pacs.ae_title,
        # No shipped secrets, even here: this run's own random audit key, and the demo's own
        # bundle signing key (dev_mode stays off).
        EUSDX_AUDIT_HMAC_SECRET=secrets.token_hex(32),
        EUSDX_BUNDLE_TRUSTED_KEYS=str(_signing_keys(opts)[1]),
    )
    log = (run_dir / "serve.log").open("wb")
    proc = subprocess.Popen(_eusdx("serve"), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_listening(dicom_port, timeout=180, proc=proc)
    return proc, dicom_port, http_port


def _collect(pacs: PacsReceiver, outcomes: dict[str, StudyOutcome], sent_at: dict[str, float],
             seen: set[Path]) -> None:
    from worker.sr.reader import summarize_report

    for path in pacs.received():
        if path in seen:
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # storescp may still be writing it: read it on the next poll
            continue
        seen.add(path)
        uid = str(ds.StudyInstanceUID)
        if ds.get("Modality") != SR_MODALITY or uid not in outcomes:
            continue
        summary = summarize_report(ds)
        outcome = outcomes[uid]
        outcome.predicted, outcome.probability = summary.label, summary.probability
        outcome.latency_s = time.time() - sent_at[uid]
        outcome.sr_path = path


def _print_table(opts: DemoOptions, outcomes: list[StudyOutcome]) -> None:
    out = opts.out
    header = f"{'study (accession)':<20} {'true':<10} {'predicted':<10} {'P(GIST)':>8} {'latency s':>10}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for o in outcomes:
        prob = f"{o.probability:.3f}" if o.probability is not None else "-"
        lat = f"{o.latency_s:.1f}" if o.latency_s is not None else "-"
        print(f"{o.accession or o.study_uid[-18:]:<20} {o.true_label:<10} {o.predicted or 'no SR':<10} "
              f"{prob:>8} {lat:>10}", file=out)
    done = [o for o in outcomes if o.predicted]
    right = sum(1 for o in done if o.predicted == o.true_label)
    print(f"\n{len(done)}/{len(outcomes)} SRs back; {right}/{len(done)} agree with the phantom's label. "
          f"Latency = last C-STORE to SR at the PACS, incl. the {opts.quiet_seconds:g} s quiet period.",
          file=out)


def run_demo(opts: DemoOptions) -> list[StudyOutcome]:
    """Run the demo; returns one outcome per sent study (raises DemoError when a step fails)."""
    out = opts.out
    opts.workdir.mkdir(parents=True, exist_ok=True)
    print("eusdx demo: synthetic phantom data only; nothing here is a clinical result.", file=out)
    _step(out, "1/5 phantom cohorts (training + studies to forward)")
    train_manifest = _cohort(opts, "cohort-train", opts.train_patients, opts.seed, "internal")
    send_manifest = _cohort(opts, "cohort-send", opts.send_patients, opts.seed + 1000, "forwarded")
    _step(out, "2/5 train a model bundle (radiomics + DeiT-tiny features, SVM/XGBoost/RF, fusion)")
    bundle = _bundle(opts, train_manifest)
    for line in describe_bundle(bundle):
        print(f"    {line}", file=out)
    _step(out, "3/5 evaluation report (ROC/DeLong, calibration, decision curves, Brier, SHAP)")
    report = _report(opts, bundle)
    _step(out, "4/5 start the PACS stand-in and eusdx serve (embedded: SQLite, in-process worker)")
    run_dir = opts.workdir / "run" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    pacs = PacsReceiver(run_dir / "pacs")
    procs: list[subprocess.Popen[Any]] = []
    try:
        pacs.start()
        serve, dicom_port, http_port = _start_serve(opts, bundle, pacs, run_dir)
        procs.append(serve)
        print(f"    PACS: {pacs.kind} {pacs.ae_title}@127.0.0.1:{pacs.port}; eusdx: DICOM {dicom_port}, "
              f"HTTP http://127.0.0.1:{http_port}/api/v1/worklist; log {run_dir / 'serve.log'}", file=out)
        _step(out, f"5/5 forward {opts.send_patients} studies (C-STORE, without their SEG: the automatic ROI "
                   "runs) and wait for the SRs")
        outcomes = _studies(send_manifest)
        studies_dir = send_manifest.parent / "studies"
        sent_at: dict[str, float] = {}
        for uid, outcome in outcomes.items():
            folder = studies_dir / uid
            n = send_study(folder, "127.0.0.1", dicom_port, calling_ae=pacs.ae_title,
                           exclude_sop_classes=WITHHELD_SOP_CLASSES)
            sent_at[uid] = time.time()
            first = next(p for p in sorted(folder.iterdir()))
            outcome.accession = str(pydicom.dcmread(first, stop_before_pixels=True).get("AccessionNumber", ""))
            print(f"    sent {outcome.accession or uid}: {n} instances", file=out, flush=True)
        seen: set[Path] = set()
        deadline = time.monotonic() + opts.timeout
        while time.monotonic() < deadline and any(o.predicted is None for o in outcomes.values()):
            if serve.poll() is not None:
                raise DemoError(f"eusdx serve exited with code {serve.returncode}; see {run_dir / 'serve.log'}")
            _collect(pacs, outcomes, sent_at, seen)
            time.sleep(0.5)
        _collect(pacs, outcomes, sent_at, seen)
    finally:
        terminate(procs)
        pacs.stop()
    results = list(outcomes.values())
    print("", file=out)
    _print_table(opts, results)
    print("\nhow this bundle was made:", file=out)
    for line in describe_bundle(bundle):
        print(f"    {line}", file=out)
    print(f"\nevaluation report: {report.resolve()}", file=out)
    print(f"SRs received by the PACS: {(run_dir / 'pacs').resolve()}", file=out)
    print(f"audit log: {(run_dir / 'audit.db').resolve()} "
          f"(try: {audit_hint(run_dir / 'audit.db')})", file=out)
    missing = [o.study_uid for o in results if o.predicted is None]
    if missing:
        raise DemoError(f"{len(missing)} of {len(results)} studies got no SR within {opts.timeout:.0f} s; "
                        f"see {run_dir / 'serve.log'}")
    return results
