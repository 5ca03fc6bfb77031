"""Webhook channel (kind ``webhook``): a JSON message per event, POSTed to the destination's URL.

Events (a destination's ``events`` chooses which it gets):

* ``result``: an SR was made (its outbox item is delivered to the webhook like to a PACS);
* ``high-gist``: the same, when the lesion-level P(GIST) is at least ``gist_priority_threshold``
  (the message then has ``"event": "high-gist"``);
* ``failure``: a study could not be analysed (:func:`dicom_node.channels.events.notify`);
* ``dead-letter``: a result was given up for another destination.

The message (``Content-Type: application/json``) carries the study UID, the accession number and
the result; never the patient's name, ID or birth date unless ``include_patient = true``. A 2xx
answer is ``sent``; 4xx other than 408/429 is permanent (dead-letter); the rest is retried.

Payload fields: ``event``, ``time`` (UTC ISO 8601), ``study_uid``, ``accession``, ``sr_sop_uid``,
``label``, ``probability``, ``threshold``, ``model_version``, ``reason``, ``destination``,
``notice``; ``patient`` (``{"name", "id"}``) only when configured.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pydicom
import requests
from pydicom.dataset import Dataset

from dicom_node.channels import Item, Outcome
from dicom_node.channels.http import network_failure, refusal, session_for
from dicom_node.channels.sr_result import read_result
from eusdx.config import Destination, Settings
from eusdx.failures import DeliveryError

__all__ = ["WebhookChannel", "result_message", "wants_result", "SR_NOTICE"]

#: What every result message says about what it is.
SR_NOTICE = "decision support only; not verified by a physician"


def _lesion_result(ds: Dataset) -> tuple[float | None, str | None, str | None]:
    """``(P(GIST), finding meaning, algorithm version)`` of the SR's lesion-level result."""
    result = read_result(ds)
    label = result.finding[2] if result.finding is not None else None
    return result.probability, label, result.algorithm_version or None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_message(ds: Dataset, settings: Settings, destination: Destination) -> dict[str, Any]:
    """The webhook message for an SR: ``event`` is ``high-gist`` when P(GIST) reaches the
    threshold and the destination asked for that event, else ``result``."""
    probability, label, version = _lesion_result(ds)
    threshold = float(settings.gist_priority_threshold)
    high = probability is not None and probability >= threshold
    event = "high-gist" if high and "high-gist" in destination.events else "result"
    message: dict[str, Any] = {
        "event": event, "time": _now(), "study_uid": str(ds.get("StudyInstanceUID", "")),
        "accession": str(ds.get("AccessionNumber", "") or "") or None,
        "sr_sop_uid": str(ds.get("SOPInstanceUID", "")), "label": label,
        "probability": probability, "threshold": threshold, "model_version": version,
        "notice": SR_NOTICE,
    }
    if destination.include_patient:
        message["patient"] = {"name": str(ds.get("PatientName", "") or ""),
                              "id": str(ds.get("PatientID", "") or "")}
    return message


def wants_result(ds: Dataset, settings: Settings, destination: Destination) -> bool:
    """Whether a webhook destination gets this SR at all (``result``, or ``high-gist`` and
    P(GIST) reaches the threshold)."""
    if "result" in destination.events:
        return True
    if "high-gist" not in destination.events:
        return False
    probability, _, _ = _lesion_result(ds)
    return probability is not None and probability >= float(settings.gist_priority_threshold)


class WebhookChannel:
    """Kind ``webhook``: one POST per attempt."""

    def __init__(self, settings: Settings, destination: Destination) -> None:
        self.settings = settings
        self.destination = destination

    def message(self, item: Item) -> dict[str, Any]:
        """The JSON message of an outbox item (an SR or an event)."""
        if item.is_event:
            with open(item.object_path, encoding="utf-8") as fh:
                message = dict(json.load(fh))
            patient = message.pop("patient", None)
            if self.destination.include_patient and patient:
                message["patient"] = patient
            return message
        return result_message(pydicom.dcmread(item.object_path, stop_before_pixels=True),
                              self.settings, self.destination)

    def deliver(self, item: Item) -> Outcome:
        message = self.message(item)
        what = f"webhook {self.destination.name}"
        try:
            response = session_for(self.destination).post(
                self.destination.address, json=message,
                timeout=self.destination.timeout_seconds)
        except requests.exceptions.RequestException as exc:
            raise network_failure(what, exc) from exc
        if not 200 <= response.status_code < 300:
            raise refusal(what, response)
        return Outcome("sent", f"{message['event']} message accepted (HTTP "
                       f"{response.status_code})")

    def poll(self, item: Item, now: float) -> Outcome | None:
        raise DeliveryError("a webhook destination never waits for a commitment", permanent=True)
