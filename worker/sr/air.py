"""Who made the result: algorithm identification kept consistent across the three places IHE AIR reads it.

IHE Radiology AI Results (AIR, Rev. 1.1, section 6.5.3.1) asks the creator of an AI result to describe each
algorithm in the Contributing Equipment Sequence (0018,A001) with Purpose of Reference
``(Newcode1, 99IHE, "Processing Algorithm")``, Manufacturer, Manufacturer's Model Name, Software Versions and
a Device UID that changes when the model changes. The content tree identifies the same algorithm twice more:
TID 4019 Algorithm Identification in every measurement group and TID 1004 Device Observer in the observation
context. All three are built here from one :class:`AlgorithmInfo`, so they cannot disagree:

=========================  ============================  =====================================
Contributing Equipment     TID 1004 device observer      TID 4019 algorithm identification
=========================  ============================  =====================================
Manufacturer = eusdx       Manufacturer = eusdx          Algorithm Manufacturer (not in 4019)
Model Name = bundle model  Model Name = bundle model     Algorithm Name = bundle model
Software Versions = ver.   Serial Number = version       Algorithm Version = version
Device UID                 Device Observer UID (same)    Algorithm Parameters sha256, threshold
=========================  ============================  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from worker.sr import codes
from worker.sr.uids import device_uid

__all__ = [
    "MANUFACTURER",
    "AlgorithmInfo",
    "algorithm_identification",
    "contributing_equipment_item",
    "observation_context",
]

MANUFACTURER = "eusdx"


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the model bundle that produced a result."""

    name: str
    version: str
    sha256: str
    synthetic: bool
    threshold: float
    uid_root: str = "2.25"  # Settings.uid_root: root of every UID the reports of this run create

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError('argument "name" must not be empty')
        if not self.version:
            raise ValueError('argument "version" must not be empty')
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower()):
            raise ValueError(f'argument "sha256" is not a SHA-256 hex digest: {self.sha256!r}')
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f'argument "threshold" must lie in [0, 1], got {self.threshold}')

    @classmethod
    def from_bundle(cls, bundle: object) -> AlgorithmInfo:
        """Read name, version, SHA-256, synthetic flag and threshold from a ``models.bundle.Bundle``."""
        return cls(
            name=str(getattr(bundle, "model_name")),
            version=str(getattr(bundle, "version")),
            sha256=str(getattr(bundle, "sha256")),
            synthetic=bool(getattr(bundle, "synthetic")),
            threshold=float(getattr(bundle, "threshold")),
        )

    @property
    def model_name(self) -> str:
        """The name as an LO value (64 characters at most)."""
        return self.name[:64]

    @property
    def software_version(self) -> str:
        """The version as an LO value (64 characters at most)."""
        return self.version[:64]

    @property
    def device_uid(self) -> str:
        """Device UID: one per bundle (version and content digest), new with every bundle."""
        return device_uid(self.version, self.sha256, self.uid_root)


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    """TID 4019 for a measurement group."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.model_name,
        version=algorithm.software_version,
        parameters=[f"sha256={algorithm.sha256}", f"threshold={algorithm.threshold:.6g}"],
        manufacturer=MANUFACTURER,
    )


def observation_context(algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    """TID 1001 with a TID 1004 device observer: the algorithm is the observer."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=algorithm.device_uid,
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.model_name,
        serial_number=algorithm.software_version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(codes.DEVICE),
            observer_identifying_attributes=device,
        )
    )


def contributing_equipment_item(algorithm: AlgorithmInfo) -> Dataset:
    """The Contributing Equipment Sequence item of the algorithm (IHE AIR 6.5.3.1).

    Built by hand: highdicom's ``ContributingEquipment`` accepts only CID 7005 purposes, and AIR's
    purpose code is IHE's placeholder ``(Newcode1, 99IHE, "Processing Algorithm")``.
    """
    purpose = Dataset()
    purpose.CodeValue = codes.PROCESSING_ALGORITHM.value
    purpose.CodingSchemeDesignator = codes.PROCESSING_ALGORITHM.scheme_designator
    purpose.CodeMeaning = codes.PROCESSING_ALGORITHM.meaning
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = algorithm.model_name
    item.SoftwareVersions = algorithm.software_version
    item.DeviceUID = algorithm.device_uid
    return item
