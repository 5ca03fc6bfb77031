"""The UIDs of everything eusdx writes back for a study, derived in one place.

Every UID is ``eusdx.uids.derived_uid(root, <study>, <bundle version>, <revision>, <kind>, <SOP class>, <what>)``:
deterministic, so a redelivered or retried study yields byte-identical UIDs and the export outbox (and
PACS) never see a second object; different for every report kind and SOP class, so a result SR, a
"no analysis possible" SR and a Comprehensive 3D SR of the same study never collide. The ``|``
separators are ``eusdx.uids``'s.

The root is ``Settings.uid_root`` (passed as ``root``; default ``2.25``, UUID-derived, PS3.5 B.2), so
an organisation root set in the configuration reaches every UID here; :mod:`eusdx.uids` does the
derivation for every object eusdx creates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from eusdx.uids import DEFAULT_UID_ROOT, derived_uid

__all__ = [
    "UID_ROOT",
    "ReportKind",
    "ReportUids",
    "SrSopClass",
    "device_uid",
    "report_uids",
]

#: Default root for the UIDs we mint (``Settings.uid_root`` overrides it per call).
UID_ROOT = DEFAULT_UID_ROOT


class ReportKind(StrEnum):
    """What an SR says: a result, or why there is none (each gets its own UIDs)."""

    RESULT = "result"
    """The study was analysed: lesion and per-image results."""
    UNDECODABLE = "undecodable"
    """No image of the study could be decoded."""
    NO_SECTOR = "no-sector"
    """No decoded frame shows a B-mode sector (Doppler, screenshots)."""
    NO_CALIBRATION = "no-calibration"
    """Frames with a sector exist, but none has a usable calibration (conflicting regions)."""
    NO_LESION = "no-lesion"
    """Frames were analysable but the model found no lesion in any of them."""


class SrSopClass(StrEnum):
    """The SR storage classes eusdx writes (``Settings.sr_sop_class``), value = setting value."""

    COMPREHENSIVE = "comprehensive"
    """Comprehensive SR, 1.2.840.10008.5.1.4.1.1.88.33: drawn by OHIF and Orthanc Stone."""
    COMPREHENSIVE_3D = "comprehensive-3d"
    """Comprehensive 3D SR, 1.2.840.10008.5.1.4.1.1.88.34: what IHE AIR asks for."""

    @property
    def uid(self) -> str:
        """The SOP Class UID (PS3.4 Annex B.5)."""
        return _SOP_CLASS_UIDS[self]


_SOP_CLASS_UIDS = {
    SrSopClass.COMPREHENSIVE: "1.2.840.10008.5.1.4.1.1.88.33",
    SrSopClass.COMPREHENSIVE_3D: "1.2.840.10008.5.1.4.1.1.88.34",
}


@dataclass(frozen=True)
class ReportUids:
    """Deterministic UIDs of one report: its series, its SOP instance, and what derives from them."""

    sr_series: str
    sr_sop: str
    sc_series: str
    study_uid: str
    bundle_version: str
    kind: ReportKind
    sop_class: SrSopClass
    revision: str = ""
    root: str = DEFAULT_UID_ROOT

    def _derive(self, what: str) -> str:
        return _uid(self.root, self.study_uid, self.bundle_version, self.revision, self.kind, self.sop_class,
                    what)

    def tracking(self, what: str) -> str:
        """Tracking UID of one measurement group (``lesion-1``, ``lesion-1/image-3``)."""
        return self._derive(f"track/{what}")

    def sc_sop(self, index: int) -> str:
        """SOP Instance UID of the ``index``-th Secondary Capture."""
        return self._derive(f"sc/{index}")


def _uid(root: str, study_uid: str, version: str, revision: str, kind: str, sop_class: str, what: str) -> str:
    return derived_uid(root, study_uid, version, revision, str(kind), str(sop_class), what)


def report_uids(
    study_uid: str,
    bundle_version: str,
    kind: ReportKind | str = ReportKind.RESULT,
    sop_class: SrSopClass | str = SrSopClass.COMPREHENSIVE,
    revision: str = "",
    root: str = DEFAULT_UID_ROOT,
) -> ReportUids:
    """UIDs of the report of one kind and SOP class for one study (revision) and bundle version.

    Parameters
    ----------
    study_uid
        StudyInstanceUID of the source study.
    bundle_version
        Version of the model bundle that produced the report.
    kind
        A :class:`ReportKind` (or its value).
    sop_class
        A :class:`SrSopClass` (or its value, the ``sr_sop_class`` setting).
    revision
        The study revision the report answers ("" for the first).
    root
        Organisation UID root (``Settings.uid_root``).

    Returns
    -------
    ReportUids

    Raises
    ------
    ValueError
        An empty study UID or bundle version, or an unknown kind or SOP class.
    """
    if not study_uid:
        raise ValueError('argument "study_uid" must not be empty')
    if not bundle_version:
        raise ValueError('argument "bundle_version" must not be empty')
    kind, sop_class = ReportKind(kind), SrSopClass(sop_class)

    def derive(what: str) -> str:
        return _uid(root, study_uid, bundle_version, revision, kind, sop_class, what)

    return ReportUids(
        sr_series=derive("sr-series"),
        sr_sop=derive("sr"),
        sc_series=derive("sc-series"),
        study_uid=study_uid,
        bundle_version=bundle_version,
        kind=kind,
        sop_class=sop_class,
        revision=revision,
        root=root,
    )


def device_uid(bundle_version: str, bundle_sha256: str, root: str = DEFAULT_UID_ROOT) -> str:
    """Device UID of the algorithm: the same for one bundle, new with every bundle (IHE AIR 6.5.3.1).

    Used as Device Observer UID (TID 1004) and as the Contributing Equipment item's Device UID.
    """
    return derived_uid(root, "eusdx-device", bundle_version, bundle_sha256)
