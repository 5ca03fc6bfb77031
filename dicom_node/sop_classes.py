"""Which SOP classes the node stores and which the worker analyses: the one definition.

A PACS forwards a whole EUS study: the ultrasound images and cines, and with them vendor
Structured Reports, Key Object Selections, presentation states, segmentations, secondary captures,
video, encapsulated PDFs and vendor-private objects. The node stores and audits every one of them
(so the forwarding job never fails for an object eusdx does not analyse); the worker analyses only
:data:`ANALYSED`, and reads lesion outlines from :data:`SEGMENTATION`.

* :data:`ANALYSED`: the image classes EUS images arrive as (DESIGN.md), retired US classes included.
* :func:`stored`: every standard Storage SOP class (PS3.4 Annex B, as listed by pynetdicom's
  ``AllStoragePresentationContexts``) plus :data:`ANALYSED`.
* Unknown classes (private UIDs, or a newer standard Storage class than the toolkit knows) are
  stored too when ``Settings.accept_unknown_sop_classes`` is on (like Orthanc's
  ``UnknownSopClassAccepted``); :func:`storage_like` says which requested abstract syntaxes count.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["ANALYSED", "SEGMENTATION", "TRANSFER_SYNTAXES", "VERIFICATION", "is_analysed",
           "storage_like", "stored"]

VERIFICATION = "1.2.840.10008.1.1"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
_STANDARD_ROOT = "1.2.840.10008."
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."

#: Transfer syntaxes accepted, in our order of preference (the requestor's order decides among
#: those it proposes in one context).
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


#: Image classes the worker decodes and classifies (name by UID).
ANALYSED: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image Storage",
}


def is_analysed(sop_class_uid: str) -> bool:
    """True when the worker analyses instances of this class."""
    return str(sop_class_uid).strip() in ANALYSED


@lru_cache(maxsize=1)
def _stored() -> dict[str, str]:
    from pydicom.uid import UID
    from pynetdicom.presentation import AllStoragePresentationContexts

    found = {str(cx.abstract_syntax): UID(str(cx.abstract_syntax)).name
             for cx in AllStoragePresentationContexts}
    found.update(ANALYSED)
    return found


def stored() -> dict[str, str]:
    """Every SOP class the node accepts for storage without further settings: UID -> name.

    Returns a new dict each call (the standard Storage classes and :data:`ANALYSED`).
    """
    return dict(_stored())


def storage_like(abstract_syntax: str) -> bool:
    """True for a class the node would store only with ``accept_unknown_sop_classes``: a private
    UID (outside ``1.2.840.10008``) or an unknown UID under the standard Storage root. Known
    classes of other services (query/retrieve, worklist, print...) are never storage-like."""
    uid = str(abstract_syntax).strip()
    if not uid or uid in _stored():
        return False
    return not uid.startswith(_STANDARD_ROOT) or uid.startswith(_STORAGE_ROOT)
