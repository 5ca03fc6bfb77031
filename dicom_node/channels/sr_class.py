"""The SR SOP class a destination asked for: Comprehensive, Comprehensive 3D or Enhanced SR.

Some result consumers store only some SR classes. The content of an SR decides which classes can
carry it (PS3.3 A.35.2 Enhanced SR, A.35.3 Comprehensive SR, A.35.13 Comprehensive 3D SR, each
with its value types and relationship constraints):

=================  ===========================================================================
class              cannot carry
=================  ===========================================================================
Enhanced SR        SCOORD3D items; by-reference relationships (ReferencedContentItemIdentifier)
Comprehensive SR   SCOORD3D items
Comprehensive 3D   (everything eusdx writes)
=================  ===========================================================================

A converted SR is a new SOP instance (PS3.4: one SOP Instance UID names one instance of one
class), so its SOP Instance UID is derived from the original's and the target class under the
installation's UID root (``eusdx.uids.derived_uid``: the same on every attempt).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID

from eusdx.failures import DeliveryError
from eusdx.uids import UUID_ROOT, derived_uid

__all__ = ["SR_CLASS_UIDS", "SR_CLASS_NAMES", "convert", "blockers", "walk_content"]

#: Configuration name -> SOP Class UID (PS3.4 B.5).
SR_CLASS_UIDS: dict[str, str] = {
    "enhanced": "1.2.840.10008.5.1.4.1.1.88.22",
    "comprehensive": "1.2.840.10008.5.1.4.1.1.88.33",
    "comprehensive-3d": "1.2.840.10008.5.1.4.1.1.88.34",
}
#: SOP Class UID -> the name PS3.4 gives it (for reasons people read).
SR_CLASS_NAMES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
}


def walk_content(items: Iterable[Dataset] | None) -> Iterator[Dataset]:
    """Every content item of an SR content tree, depth first (``items``: a ContentSequence)."""
    for item in items or []:
        yield item
        yield from walk_content(item.get("ContentSequence"))


def blockers(ds: Dataset, target: str) -> list[str]:
    """What in ``ds``'s content tree the SR class ``target`` (a name of :data:`SR_CLASS_UIDS`)
    cannot carry; empty when it can carry all of it."""
    found: set[str] = set()
    for item in walk_content(ds.get("ContentSequence")):
        if item.get("ValueType") == "SCOORD3D" and target != "comprehensive-3d":
            found.add("SCOORD3D content items")
        if "ReferencedContentItemIdentifier" in item and target == "enhanced":
            found.add("by-reference relationships")
    return sorted(found)


def convert(ds: Dataset, target: str, uid_root: str = UUID_ROOT) -> Dataset:
    """``ds`` as an instance of the SR class ``target``; ``ds`` itself when it already is one,
    or when ``target`` is ``as-built``. A converted copy's SOP Instance UID lies under
    ``uid_root`` (``Settings.uid_root``).

    Raises
    ------
    eusdx.failures.DeliveryError
        Permanent: ``ds`` is not an SR of a class named here, or its content needs a class
        ``target`` is not (the reason names what).
    """
    if target == "as-built":
        return ds
    uid = SR_CLASS_UIDS[target]
    current = str(ds.get("SOPClassUID", ""))
    if current == uid:
        return ds
    if current not in SR_CLASS_NAMES:
        raise DeliveryError(f"the object (SOP class {current}) is not an SR; it cannot be sent as "
                            f"{SR_CLASS_NAMES[uid]}", permanent=True)
    problems = blockers(ds, target)
    if problems:
        raise DeliveryError(f"the SR holds {' and '.join(problems)}, which "
                            f"{SR_CLASS_NAMES[uid]} cannot carry (PS3.3 A.35); choose another "
                            "sr_class for this destination", permanent=True)
    out = copy.deepcopy(ds)
    new_uid = UID(derived_uid(uid_root, str(ds.SOPInstanceUID), uid, "sr-class"))
    out.SOPClassUID = UID(uid)
    out.SOPInstanceUID = new_uid
    if getattr(out, "file_meta", None) is not None:
        out.file_meta.MediaStorageSOPClassUID = UID(uid)
        out.file_meta.MediaStorageSOPInstanceUID = new_uid
    return out
