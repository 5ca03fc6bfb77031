"""The worklist as FHIR R4 JSON: one preliminary DiagnosticReport and one Observation per result.

Feedback travels with it: the reader's latest verdict as an extension of the DiagnosticReport,
the latest pathology result as a final Observation referenced from the report's ``result``.

Plain dicts (validated against ``fhir.resources.R4B`` in the tests) so serving needs no model
objects. GIST has no code in pydicom's SNOMED CT dictionary and we never invent SCT values, so it is
coded in the private system ``urn:eusdx:codes`` (as in the SR conformance statement); leiomyoma uses
SCT 1162890002.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["worklist_bundle", "PRIVATE_SYSTEM", "VERDICT_EXTENSION"]

PRIVATE_SYSTEM = "urn:eusdx:codes"
_LABEL_CODES: dict[str, dict[str, str]] = {
    "gist": {"system": PRIVATE_SYSTEM, "code": "GIST",
             "display": "Gastrointestinal stromal tumor"},
    "leiomyoma": {"system": "http://snomed.info/sct", "code": "1162890002",
                  "display": "Leiomyoma"},
}
_REPORT_CODE = {"coding": [{"system": PRIVATE_SYSTEM, "code": "eus-sel-classification",
                            "display": "EUS subepithelial lesion classification (decision support)"}],
                "text": "EUS subepithelial lesion: GIST vs leiomyoma (decision support)"}
_PROBABILITY_CODE = {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                 "code": "122157", "display": "Probability"}],
                     "text": "Probability of GIST"}
_PATHOLOGY_CODE = {"coding": [{"system": PRIVATE_SYSTEM, "code": "sel-reference-diagnosis",
                               "display": "Reference diagnosis of the subepithelial lesion"}],
                   "text": "Pathology / reference diagnosis"}
#: Extension carrying the reader's verdict (accept / reject / correct -> label) on a result.
VERDICT_EXTENSION = "urn:eusdx:fhir:reader-verdict"
_NS = uuid.UUID("6f1c7c52-3b1e-4d0e-9a55-2f0b6a1e0c11")


def _urn(*parts: str) -> str:
    # Deterministic ids: the same result always gets the same fullUrl.
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def _label_coding(label: str | None) -> list[dict[str, str]]:
    if label is None:
        return []
    return [_LABEL_CODES.get(label.lower(), {"system": PRIVATE_SYSTEM, "code": label,
                                             "display": label})]


def _pair(item: dict[str, Any]) -> list[dict[str, Any]]:
    key = (item["study_uid"], item["bundle_version"], str(item["seq"]))
    obs_url, report_url = _urn(*key, "obs"), _urn(*key, "report")
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "code": _PROBABILITY_CODE,
        "effectiveDateTime": item["ts"],
        "note": [{"text": f"model bundle {item['bundle_version']}; ROI {item.get('roi_source')}"}],
    }
    if item.get("probability") is not None:
        observation["valueQuantity"] = {"value": item["probability"], "unit": "probability",
                                        "system": "http://unitsofmeasure.org", "code": "1"}
    if item.get("priority"):
        observation["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "H", "display": "High"}], "text": "priority: GIST probability above threshold"}]
    identifiers = [{"system": "urn:dicom:uid", "value": f"urn:oid:{item['study_uid']}",
                    "type": {"text": "StudyInstanceUID"}}]
    if item.get("sr_sop_uid"):
        identifiers.append({"system": "urn:dicom:uid", "value": f"urn:oid:{item['sr_sop_uid']}",
                            "type": {"text": "SR SOPInstanceUID"}})
    if item.get("accession"):
        identifiers.append({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": item["accession"]})
    probability = item.get("probability")
    conclusion = (f"{item.get('label')}; P(GIST) = {probability:.3f}" if probability is not None
                  else str(item.get("label")))
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "identifier": identifiers,
        "code": _REPORT_CODE,
        "effectiveDateTime": item["ts"],
        "issued": item["ts"],
        "result": [{"reference": obs_url}],
        "conclusion": conclusion + " (decision support, not verified)",
    }
    coding = _label_coding(item.get("label"))
    if coding:
        report["conclusionCode"] = [{"coding": coding, "text": item["label"]}]
    verdict = item.get("verdict")
    if verdict:
        # The reader's verdict on this decision-support result (dashboard feedback).
        text = verdict["verdict"] + (f" -> {verdict['corrected_label']}"
                                     if verdict.get("corrected_label") else "")
        report["extension"] = [{"url": VERDICT_EXTENSION, "valueString": text}]
    entries = [{"fullUrl": report_url, "resource": report},
               {"fullUrl": obs_url, "resource": observation}]
    pathology = item.get("pathology")
    if pathology:
        path_url = _urn(*key, "pathology")
        report["result"].append({"reference": path_url})
        found: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "code": _PATHOLOGY_CODE,
            "valueCodeableConcept": {"coding": _label_coding(pathology["truth"]) if
                                     pathology["truth"] != "other" else [],
                                     "text": pathology["truth"]},
            "note": [{"text": f"source: {pathology['source']}"}],
        }
        if pathology.get("diagnosed_on"):
            found["effectiveDateTime"] = pathology["diagnosed_on"]
        entries.append({"fullUrl": path_url, "resource": found})
    return entries


def worklist_bundle(feed: dict[str, Any], *, next_url: str | None = None) -> dict[str, Any]:
    """A FHIR R4 ``searchset`` Bundle for a worklist page (``feed`` from ``queries.worklist``)."""
    entries: list[dict[str, Any]] = []
    for item in feed["items"]:
        entries.extend(_pair(item))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(feed["items"]),
        "entry": entries,
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle
