"""A small, fully known audit history used by the query, CLI and HTTP tests."""

from __future__ import annotations

from audit import AuditLog

STUDY_A = "1.2.826.0.1.3680043.10.7.1"  # PACS_A, GIST 0.92, exported
STUDY_B = "1.2.826.0.1.3680043.10.7.2"  # PACS_B, leiomyoma 0.15, export dead-lettered
STUDY_C = "1.2.826.0.1.3680043.10.7.3"  # PACS_A, analysis error, failed
STUDY_D = "1.2.826.0.1.3680043.10.7.4"  # PACS_B, not routed


def _instances(log: AuditLog, assoc: int, study: str, n: int, ae: str, accession: str) -> None:
    for k in range(n):
        log.instance(association_id=assoc, study_uid=study, series_uid=f"{study}.1",
                     sop_uid=f"{study}.1.{k}", sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                     transfer_syntax="1.2.840.10008.1.2.1", size=1000 + k, digest="00" * 32,
                     status="stored", calling_ae=ae, patient_id=f"PID-{accession}",
                     accession=accession, modality="US", body_part="STOMACH")


def populate(log: AuditLog) -> None:
    """Write the known history through the public write API."""
    a1 = log.association(peer_ae="PACS_A", peer_host="10.0.0.1", peer_port=104,
                         called_ae="EUSDX", tls=False, accepted=True)
    _instances(log, a1, STUDY_A, 3, "PACS_A", "ACC-A")
    _instances(log, a1, STUDY_C, 1, "PACS_A", "ACC-C")
    log.instance(association_id=a1, study_uid=STUDY_A, series_uid=None, sop_uid="bad..uid",
                 sop_class_uid=None, transfer_syntax=None, size=10, digest=None,
                 status="rejected", reason="invalid-uid", calling_ae="PACS_A")
    log.association_closed(association_id=a1, instances=5)
    a2 = log.association(peer_ae="PACS_B", peer_host="10.0.0.2", peer_port=104,
                         called_ae="EUSDX", tls=True, accepted=True)
    _instances(log, a2, STUDY_B, 2, "PACS_B", "ACC-B")
    _instances(log, a2, STUDY_D, 1, "PACS_B", "ACC-D")
    log.association_closed(association_id=a2, instances=3)
    log.association(peer_ae="EVIL", peer_host="10.6.6.6", peer_port=104, called_ae="EUSDX",
                    tls=False, accepted=False, reason="calling-ae-not-allowed")

    for study in (STUDY_A, STUDY_B, STUDY_C):
        for state in ("complete", "queued", "analysing"):
            log.study_state(study_uid=study, state=state)
    log.study_state(study_uid=STUDY_D, state="complete")
    log.study_state(study_uid=STUDY_D, state="not-routed", reason="modality")

    log.analysis(study_uid=STUDY_A, bundle_version="1.0.0", bundle_sha256="a" * 64,
                 device="cpu", timings={"load": 1.0, "features": 3.0, "classify": 0.5},
                 lesions=[{"probability": 0.92}], probability=0.92, label="GIST",
                 roi_source="seg", sr_sop_uid=f"{STUDY_A}.99")
    log.analysis(study_uid=STUDY_B, bundle_version="1.0.0", bundle_sha256="a" * 64,
                 device="cpu", timings={"load": 2.0, "features": 5.0, "classify": 1.5},
                 lesions=[{"probability": 0.15}], probability=0.15, label="leiomyoma",
                 roi_source="auto", sr_sop_uid=f"{STUDY_B}.99")
    log.analysis(study_uid=STUDY_C, bundle_version="1.0.0", bundle_sha256="a" * 64,
                 device="cpu", timings={"load": 0.5}, lesions=[], probability=None,
                 label=None, roi_source=None, error="no-usable-frames")
    log.study_state(study_uid=STUDY_C, state="failed", reason="no-usable-frames")
    for study in (STUDY_A, STUDY_B):
        log.study_state(study_uid=study, state="reported")
    log.export(study_uid=STUDY_A, destination="PACS_A@10.0.0.1:104", attempt=1, status="sent",
               sr_sop_uid=f"{STUDY_A}.99")
    log.study_state(study_uid=STUDY_A, state="exported")
    for attempt in (1, 2):
        log.export(study_uid=STUDY_B, destination="PACS_B@10.0.0.2:104", attempt=attempt,
                   status="failed", sr_sop_uid=f"{STUDY_B}.99", error="association-rejected")
    log.export(study_uid=STUDY_B, destination="PACS_B@10.0.0.2:104", attempt=3,
               status="dead-letter", sr_sop_uid=f"{STUDY_B}.99", error="association-rejected")
    log.export(study_uid=STUDY_A, destination="ARCHIVE@10.0.0.9:104", attempt=1,
               status="queued", sr_sop_uid=f"{STUDY_A}.99")
