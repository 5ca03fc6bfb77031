"""STOW-RS receive: the same guarantees as C-STORE (fsync + audit before 200, resend policy,
routing and study assembly), token roles and a request size limit; sent by dicomweb-client (an
independent client) and by hand-made bodies for the malformed cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid

from tests.dicom_node.conftest import rows
from tests.dicom_node.dicomfiles import us_instance
from tests.dicom_node.httpnode import QA_TOKEN, SENDER_TOKEN, HttpServing, tokens
from tests.dicom_node.peers import wait_for


@pytest.fixture
def stow_node(start_node):
    servings = []

    def start(**overrides):
        node, audit, enq = start_node(api_tokens=tokens(), **overrides)
        serving = HttpServing(node)
        servings.append(serving)
        return node, audit, enq, serving

    yield start
    for serving in servings:
        serving.stop()


def client(serving, token=SENDER_TOKEN):
    from dicomweb_client.api import DICOMwebClient

    c = DICOMwebClient(f"{serving.url}/dicom-web", headers={"Authorization": f"Bearer {token}"})
    c.set_http_retry_params(retry=False)
    return c


def part10(ds) -> bytes:
    fp = DicomBytesIO()
    ds.save_as(fp, enforce_file_format=True)
    return fp.getvalue()


def multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def post(serving, body, ctype, token=SENDER_TOKEN, study=None):
    url = f"{serving.url}/dicom-web/studies" + (f"/{study}" if study else "")
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=body, headers=headers, timeout=30)


def spool_files(node) -> list[Path]:
    return sorted(Path(node.settings.spool_dir).rglob("*.dcm"))


def test_stored_fsynced_audited_then_assembled_and_queued(stow_node):
    node, audit, enq, serving = stow_node()
    study = generate_uid()
    instances = [us_instance(study_uid=study, pixel_value=i) for i in range(3)]
    answer = client(serving).store_instances(instances, study_instance_uid=study)
    stored = {str(r.ReferencedSOPInstanceUID) for r in answer.ReferencedSOPSequence}
    assert stored == {str(i.SOPInstanceUID) for i in instances}
    assert "FailedSOPSequence" not in answer
    files = spool_files(node)
    assert len(files) == 3
    got = rows(audit, "select sop_uid, status, digest, calling_ae from instances")
    assert {r[0] for r in got} == stored and {r[1] for r in got} == {"stored"}
    by_sop = {f.stem: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert all(by_sop[sop] == digest for sop, _, digest, _ in got)
    assert {r[3] for r in got} == {"pacs"}  # the token's name stands for the calling AE
    (assoc,) = rows(audit, "select peer_ae, reason from associations where event = 'open'")
    assert assoc == ("pacs", "stow-rs")
    wait_for(lambda: enq.studies == [study])  # routed (US + STOMACH), assembled, queued


def test_resend_policy_applies_as_for_c_store(stow_node):
    node, audit, _, serving = stow_node(resend_policy="reject")
    ds = us_instance()
    body, ctype = multipart([part10(ds)])
    assert post(serving, body, ctype).status_code == 200
    again = post(serving, body, ctype)
    assert again.status_code == 409
    (failed,) = again.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0111]
    assert failed["00081155"]["Value"] == [str(ds.SOPInstanceUID)]


def test_keep_first_answers_200_and_audits_the_duplicate(stow_node):
    node, audit, _, serving = stow_node()
    body, ctype = multipart([part10(us_instance())])
    assert post(serving, body, ctype).status_code == 200
    assert post(serving, body, ctype).status_code == 200
    assert [r[0] for r in rows(audit, "select status from instances order by seq")] == [
        "stored", "duplicate-ignored"]


@pytest.mark.parametrize("token, code", [(None, 401), ("wrong", 401), (QA_TOKEN, 403)])
def test_token_roles(stow_node, token, code):
    node, audit, _, serving = stow_node()
    body, ctype = multipart([part10(us_instance())])
    assert post(serving, body, ctype, token=token).status_code == code
    assert spool_files(node) == []
    assert rows(audit, "select count(*) from instances") == [(0,)]


def test_request_size_limit(stow_node):
    node, audit, _, serving = stow_node(stow_max_request_bytes=4096)
    body, ctype = multipart([part10(us_instance(rows=128))])  # 128x16 RGB: > 4 KiB
    assert len(body) > 4096
    assert post(serving, body, ctype).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield body

    assert post(serving, chunks(), ctype).status_code == 413
    assert spool_files(node) == []
    assert list((Path(node.settings.spool_dir) / ".tmp").iterdir()) == []


@pytest.mark.parametrize("ctype, code", [
    ("application/json", 415),
    ('multipart/related; type="application/dicom+json"; boundary=x', 415),
    ('multipart/related; type="application/dicom"', 400),
])
def test_media_type_checks(stow_node, ctype, code):
    node, _, _, serving = stow_node()
    assert post(serving, b"{}", ctype).status_code == code


def test_mixed_request_keeps_the_good_parts(stow_node):
    node, audit, _, serving = stow_node()
    study = generate_uid()
    good = us_instance(study_uid=study)
    elsewhere = us_instance()  # another study than the path names
    body, ctype = multipart([part10(good), b"not a dicom file" * 20, part10(elsewhere)])
    answer = post(serving, body, ctype, study=study)
    assert answer.status_code == 202
    data = answer.json()
    assert [r["00081155"]["Value"][0] for r in data["00081199"]["Value"]] == [
        str(good.SOPInstanceUID)]
    reasons = sorted(r["00081197"]["Value"][0] for r in data["00081198"]["Value"])
    assert reasons == [0xA900, 0xC000]
    assert [f.stem for f in spool_files(node)] == [str(good.SOPInstanceUID)]
    assert list((Path(node.settings.spool_dir) / ".tmp").iterdir()) == []


def test_garbage_body_is_400_and_keeps_nothing(stow_node):
    node, _, _, serving = stow_node()
    answer = post(serving, b"--x\r\nContent-Type: application/dicom\r\n",
                  'multipart/related; type="application/dicom"; boundary=zz')
    assert answer.status_code == 400
    assert spool_files(node) == []


def test_sop_classes_and_syntaxes_the_node_does_not_take_are_refused(stow_node):
    from tests.dicom_node.test_export import make_sr

    # with unknown SOP classes refused, a private class is not taken (every standard Storage class is:
    # dicom_node/sop_classes.py)
    node, _, _, serving = stow_node(accept_unknown_sop_classes=False)
    private = us_instance()
    private.SOPClassUID = "1.2.826.0.1.3680043.8.498.99.1"  # a private, non-standard class
    private.file_meta.MediaStorageSOPClassUID = private.SOPClassUID
    # an unknown transfer syntax of the same length in the meta group (pydicom will not write one)
    odd = part10(us_instance()).replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.7\x00", 1)
    body, ctype = multipart([part10(private), odd])
    answer = post(serving, body, ctype)
    assert answer.status_code == 409
    reasons = sorted(r["00081197"]["Value"][0] for r in answer.json()["00081198"]["Value"])
    assert reasons == [0x0122, 0xC122]
    assert spool_files(node) == []


def test_audit_store_outage_is_503_nothing_kept_then_stored_once_back(stow_node):
    """The audit database loses its chain head (as in the C-STORE test): STOW-RS answers 503
    with Retry-After and keeps nothing; once the table is back the same request is stored."""
    import sqlalchemy as sa

    node, audit, _, serving = stow_node()
    body, ctype = multipart([part10(us_instance())])
    with audit.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE chain_head RENAME TO chain_head_away"))
    try:
        answer = post(serving, body, ctype)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
        assert spool_files(node) == []
        assert list((Path(node.settings.spool_dir) / ".tmp").iterdir()) == []
    finally:
        with audit.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE chain_head_away RENAME TO chain_head"))
    assert post(serving, body, ctype).status_code == 200
    assert len(spool_files(node)) == 1


def test_meta_parser_takes_any_bytes_without_crashing():
    """Whatever a client puts in a part (cut short, bytes flipped, no preamble), the meta parser
    either returns the three values or raises BadPart: never another exception."""
    from hypothesis import given, settings, strategies as st

    from dicom_node.stow import BadPart, meta_of

    good = part10(us_instance())
    _, _, values = meta_of(good)
    assert values["ts"] == "1.2.840.10008.1.2.1"
    assert meta_of(good[128:])[2] == values  # "DICM" without the preamble
    assert meta_of(good[132:])[2] == values  # meta group only

    @settings(max_examples=300, deadline=None)
    @given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 399),
                                                             st.integers(0, 255)), max_size=4),
           start=st.sampled_from([0, 128, 132]))
    def check(cut, flips, start):
        data = bytearray(good[start:start + cut])
        for pos, value in flips:
            if pos < len(data):
                data[pos] = value
        try:
            begin, end, found = meta_of(bytes(data))
        except BadPart:
            return
        assert begin <= end <= len(data) and set(found) >= {"sop_class", "sop_uid", "ts"}

    check()
