"""DICOMweb STOW-RS channel (kind ``stowrs``), with dicomweb-client.

One attempt POSTs the SR to ``<address>/studies/<StudyInstanceUID>`` (PS3.18 10.5) as
``multipart/related; type="application/dicom"``. The response (PS3.18 10.5.3) decides:

* 200 and every instance in the Referenced SOP Sequence (0008,1199): ``committed``, the
  archive's confirmation that it keeps the object (it holds the place of Storage Commitment);
* 202 or 409 with a Failed SOP Sequence (0008,1198): refused, the Failure Reason (0008,1197) of
  each instance kept in the reason; permanent, unless the reason is a resource limitation (A7xx);
* any other 4xx except 408/429: permanent; 408, 429, 5xx and network errors: transient.

Credentials: bearer token or basic auth; certificates are verified (``tls_ca`` or the system
store), see :mod:`dicom_node.channels.http`.
"""

from __future__ import annotations

from typing import Any

import requests
from pydicom.dataset import Dataset

from dicom_node.channels import Item, Outcome
from dicom_node.channels.cstore import prepare
from dicom_node.channels.http import network_failure, refusal, session_for
from eusdx.config import Destination, Settings
from eusdx.failures import DeliveryError

__all__ = ["StowChannel", "failure_details", "refusal_of"]


def failure_details(response_ds: Dataset) -> list[tuple[str, int]]:
    """``(SOP Instance UID, Failure Reason)`` of each entry of a STOW-RS Failed SOP Sequence."""
    return [(str(f.get("ReferencedSOPInstanceUID", "?")), int(f.get("FailureReason", 0x0110)))
            for f in response_ds.get("FailedSOPSequence", [])]


def _describe(failed: list[tuple[str, int]]) -> str:
    return "; ".join(f"instance {uid}: Failure Reason 0x{code:04X}" for uid, code in failed)


def _response_dataset(response: Any) -> Dataset:
    """The DICOM JSON body of a STOW-RS answer, or an empty data set. The media type is not
    trusted: Orthanc 1.10 answers 409 with a DICOM JSON body and no Content-Type."""
    try:
        if response is not None and response.content.lstrip()[:1] == b"{":
            return Dataset.from_json(response.json())
    except ValueError:
        pass
    return Dataset()


class StowChannel:
    """Kind ``stowrs``: one STOW-RS request per attempt."""

    def __init__(self, settings: Settings, destination: Destination) -> None:
        self.settings = settings
        self.destination = destination

    def _client(self) -> Any:
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(self.destination.address.rstrip("/"),
                                session=session_for(self.destination),
                                timeout=self.destination.timeout_seconds)
        # The outbox retries with its own back-off and audit rows; the client must not.
        client.set_http_retry_params(retry=False)
        return client

    def deliver(self, item: Item) -> Outcome:
        ds = prepare(item.object_path, self.destination, self.settings.uid_root)
        what = f"STOW-RS at {self.destination.address}"
        sop = str(ds.SOPInstanceUID)
        try:
            answer = self._client().store_instances([ds], study_instance_uid=str(
                ds.StudyInstanceUID))
        except requests.exceptions.HTTPError as exc:
            raise refusal_of(what, exc.response) from exc
        except requests.exceptions.RequestException as exc:
            raise network_failure(what, exc) from exc
        except ValueError as exc:  # a 202 answer in a media type the client cannot read
            raise DeliveryError(f"{what} answered in a form that cannot be read: {exc}") from exc
        failed = failure_details(answer)
        if failed:
            transient = all((code & 0xFF00) == 0xA700 for _, code in failed)
            raise DeliveryError(f"{what} stored only part of the request: {_describe(failed)}",
                                permanent=not transient)
        stored = {str(r.get("ReferencedSOPInstanceUID", ""))
                  for r in answer.get("ReferencedSOPSequence", [])}
        if sop not in stored:
            raise DeliveryError(f"{what} answered success without listing the SR as stored; "
                                "sending again")
        return Outcome("committed", "stored (listed in the STOW-RS response)",
                       {"sent_sop_uid": sop})

    def poll(self, item: Item, now: float) -> Outcome | None:
        raise DeliveryError("a stowrs destination never waits for a commitment", permanent=True)


def refusal_of(what: str, response: Any) -> DeliveryError:
    """The :class:`DeliveryError` of a non-2xx STOW-RS answer, with the Failure Reason of each
    instance its Failed SOP Sequence names; transient only for 408/429/5xx or when every
    instance failed for lack of resources (0xA7xx)."""
    failed = failure_details(_response_dataset(response))
    err = refusal(what, response, _describe(failed))
    if failed and all((code & 0xFF00) == 0xA700 for _, code in failed):
        return DeliveryError(str(err), permanent=False)
    return err
