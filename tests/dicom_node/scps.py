"""pynetdicom result consumers with chosen behaviours (in-process, free loopback ports):
one that supports only some SR classes, one that answers a chosen C-STORE status, and a Storage
Commitment SCP that answers (or not) on a new association to the requestor."""

from __future__ import annotations

import threading
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt

from tests.conftest import free_port

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


class Consumer:
    """A C-STORE SCP storing ``sop_classes`` and answering ``status`` (a code or a callable).

    With ``commit`` set it is also a Storage Commitment SCP: ``"answer"`` sends an
    N-EVENT-REPORT (all committed) on a new association to ``report_to`` (``(ae, host, port)``),
    ``"refuse"`` reports the instance as failed (0x0112), ``"silent"`` never answers.
    """

    def __init__(self, sop_classes: list[str], *, status: int = 0x0000, aet: str = "CONSUMER",
                 commit: str | None = None, report_to: tuple[str, str, int] | None = None) -> None:
        self.sop_classes = sop_classes
        self.status = status
        self.aet = aet
        self.port = free_port()
        self.commit = commit
        self.report_to = report_to
        self.received: list[Dataset] = []
        self.commit_requests: list[Dataset] = []
        self._server: Any = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def _store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return self.status

    def _action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        self.commit_requests.append(info)
        if self.commit in ("answer", "refuse"):
            thread = threading.Thread(target=self._report, args=(info,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return 0x0000, None

    def _report(self, info: Dataset) -> None:
        assert self.report_to is not None
        ae = AE(ae_title=self.aet)
        ae.add_requested_context(STORAGE_COMMITMENT, _SYNTAXES[1])
        role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
        called, host, port = self.report_to
        assoc = ae.associate(host, port, ae_title=called, ext_neg=[role])
        if not assoc.is_established:
            return
        report = Dataset()
        report.TransactionUID = info.TransactionUID
        if self.commit == "answer":
            report.ReferencedSOPSequence = info.ReferencedSOPSequence
            event_type = 1
        else:
            failed = Dataset()
            failed.ReferencedSOPClassUID = info.ReferencedSOPSequence[0].ReferencedSOPClassUID
            failed.ReferencedSOPInstanceUID = info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            failed.FailureReason = 0x0112
            report.FailedSOPSequence = [failed]
            event_type = 2
        assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT,
                                  "1.2.840.10008.1.20.1.1")
        assoc.release()

    def start(self) -> Consumer:
        ae = AE(ae_title=self.aet)
        for uid in self.sop_classes:
            ae.add_supported_context(uid, _SYNTAXES)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store)]
        if self.commit is not None:
            ae.add_supported_context(STORAGE_COMMITMENT, _SYNTAXES, scu_role=True, scp_role=True)
            handlers.append((evt.EVT_N_ACTION, self._action))
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
