"""UIDs under the organisation root: valid (PS3.5 9.1), deterministic where retries need it."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eusdx.config import load_settings
from eusdx.errors import ConfigError
from eusdx.uids import InvalidUID, check_root, check_uid, derived_uid, is_valid_uid, new_uid

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
ROOTS = ["2.25", "1.2.826.0.1.3680043.10.999", "1.3.6.1.4.1.123456789.42.1.2"]
texts = st.text(min_size=1, max_size=80)


@pytest.mark.parametrize("root", ROOTS)
@given(parts=st.lists(texts, min_size=1, max_size=4))
def test_derived_uids_are_valid_and_deterministic(root: str, parts: list[str]) -> None:
    uid = derived_uid(root, *parts)
    assert uid == derived_uid(root, *parts)
    assert uid.startswith(root + ".") and len(uid) <= 64 and _UID.fullmatch(uid), uid


@pytest.mark.parametrize("root", ROOTS)
def test_new_uids_are_valid_and_distinct(root: str) -> None:
    uids = {new_uid(root) for _ in range(200)}
    assert len(uids) == 200
    assert all(u.startswith(root + ".") and len(u) <= 64 and _UID.fullmatch(u) for u in uids)


def test_uuid_root_is_a_name_based_uuid() -> None:
    """PS3.5 B.2: 2.25 followed by the UUID as one decimal integer; ours are RFC 9562 version 5."""
    uid = derived_uid("2.25", "1.2.3", "v1", "sr")
    value = uuid.UUID(int=int(uid.split(".", 2)[2]))
    assert value.version == 5


def test_parts_are_separated() -> None:
    assert derived_uid("2.25", "ab", "c") != derived_uid("2.25", "a", "bc")
    assert derived_uid("1.2.3", "ab", "c") != derived_uid("1.2.3", "a", "bc")


@pytest.mark.parametrize("bad", ["", "2.25.", "01.2", "1..2", "1.2.a", "1.2.3.4.5.6.7.8.9.10.11.12.13.14"])
def test_bad_roots_refused(bad: str) -> None:
    if bad == "2.25.":
        assert check_root(bad) == "2.25"  # a trailing dot is tolerated
        return
    with pytest.raises(ValueError, match="UID root"):
        check_root(bad)
    with pytest.raises(ConfigError, match="uid_root"):
        load_settings(None, uid_root=bad)


def test_sr_uids_follow_the_configured_root() -> None:
    from worker.sr.uids import device_uid, report_uids

    hospital_root = "1.2.826.0.1.3680043.10.999"
    default = report_uids("1.2.3", "v1")
    hospital = report_uids("1.2.3", "v1", root=hospital_root)
    assert default.sr_sop.startswith("2.25.") and device_uid("v1", "0" * 64).startswith("2.25.")
    assert hospital.sr_sop.startswith(hospital_root + ".")
    assert hospital.tracking("lesion-1").startswith(hospital_root + ".")
    assert device_uid("v1", "0" * 64, hospital_root).startswith(hospital_root + ".")
    assert hospital.sr_sop == report_uids("1.2.3", "v1", root=hospital_root).sr_sop


def test_implementation_class_uid_is_stable() -> None:
    from dicom_node.receive import IMPLEMENTATION_CLASS_UID

    assert IMPLEMENTATION_CLASS_UID == derived_uid("2.25", "eusdx", "implementation", "1")


@pytest.mark.parametrize("value", ["1.2.840.10008.1.1", "1.2.03.4", "0.1"])
def test_received_uids_pass_the_one_gate(value: str) -> None:
    assert is_valid_uid(value) and check_uid(value) == value


@pytest.mark.parametrize("value", ["", "..", "1..2", ".1", "1.", "1/2", "1.2\n", "1" * 65, None, 12])
def test_unsafe_uids_never_pass(value: object) -> None:
    assert not is_valid_uid(value) and not is_valid_uid(value, strict=True)
    with pytest.raises(InvalidUID, match="invalid StudyInstanceUID"):
        check_uid(value, "StudyInstanceUID")


def test_strict_uids_refuse_leading_zeros() -> None:
    """PS3.5 9.1: what an SR we write references must not have a component with a leading zero
    (the node still stores such instances: modalities send them)."""
    assert is_valid_uid("1.2.03") and not is_valid_uid("1.2.03", strict=True)
    assert is_valid_uid("1.2.0.3", strict=True)
