"""DIMSE status codes the node answers with (one ``IntEnum``, never bare hex in handlers).

Values follow PS3.4 Annex B.2.3 (Storage Service Class statuses) and PS3.7 Annex C (general
statuses). Where the standard leaves a range to the implementation (``Cxxx`` "cannot understand"),
each sub-code below names one reason so that an operator can tell them apart in a peer's log; the
conformance statement lists them.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    """C-ECHO / C-STORE response statuses returned by :mod:`dicom_node.handlers`."""

    SUCCESS = 0x0000
    """The instance is on disk (fsynced) and recorded in the audit store."""

    DUPLICATE_REFUSED = 0x0111
    """PS3.7 C.4 "Duplicate SOP Instance": re-sent instance refused (``resend_policy=reject``)."""

    OUT_OF_RESOURCES = 0xA700
    """Refused: disk above ``spool_max_fill_percent``, disk error, or audit store unavailable."""

    INFLATE_LIMIT = 0xA701
    """Refused (A7xx, out of resources): a Deflated data set inflates beyond ``inflate_max_bytes``
    or ``inflate_max_ratio`` times its size."""

    DATASET_MISMATCH = 0xA900
    """Error: the data set's SOP Class does not match the presentation context / request."""

    CANNOT_UNDERSTAND = 0xC000
    """Error: the data set cannot be parsed."""

    MISSING_UID = 0xC001
    """Error: Study, Series or SOP Instance UID is absent or empty."""

    INVALID_UID = 0xC002
    """Error: a UID is not digits and dots of at most 64 characters (never used in a path)."""

    INSTANCE_MISMATCH = 0xC003
    """Error: the data set's SOP Instance UID differs from the request's Affected SOP Instance UID."""

    @property
    def is_success(self) -> bool:
        return self is Status.SUCCESS
