"""The DICOM node: listener (SCP), study assembler and export runner, started and stopped as one.

``Node(settings, audit, enqueuer)`` is the hook ``eusdx serve`` (and tests) use::

    node = Node(settings, audit, enqueuer)
    node.start()          # binds the port, recovers open studies, starts the threads
    ...
    node.stop()           # stop accepting, let in-flight associations finish, stop threads
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node import _pynetdicom
from dicom_node.assembler import StudyAssembler
from dicom_node.channels.commit import STORAGE_COMMITMENT, CommitAnswers, handle_event_report
from dicom_node.cleaner import Cleaner
from dicom_node.enqueue import Enqueuer
from dicom_node.export import ExportRunner
from dicom_node.handlers import (
    AccessPolicy,
    NodeContext,
    handle_conn_close,
    handle_data_recv,
    handle_accepted,
    handle_echo,
    handle_rejected,
    handle_requested,
    handle_store,
)
from dicom_node.metrics import NodeMetrics
from dicom_node.outbox import Outbox
from dicom_node.pending import PendingStudies
from dicom_node.ports import NodeAudit
from dicom_node.reconcile import Reconciler
from dicom_node.sop_classes import TRANSFER_SYNTAXES, VERIFICATION, stored
from dicom_node.spool import Spool
from dicom_node.tls import server_context
from eusdx.config import Settings
from eusdx.errors import ConfigError

__all__ = ["Node", "STORAGE_SOP_CLASSES", "TRANSFER_SYNTAXES", "VERIFICATION"]

log = logging.getLogger(__name__)

#: SOP classes we store (PS3.4 B.5): every standard Storage class and the analysed image classes;
#: which of them the worker analyses is :data:`dicom_node.sop_classes.ANALYSED`.
STORAGE_SOP_CLASSES: dict[str, str] = stored()


class _NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted connection.

    A C-STORE response is a small PDU the peer waits for before sending the next instance;
    Nagle's algorithm would hold it back for up to 40 ms (delayed-ACK interplay).
    """

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            log.debug("TCP_NODELAY not set on a connection from %s", address)
        return client, address


class Node:
    """The DICOM listener with its assembler and export runner.

    Parameters
    ----------
    settings
        The configuration read at start-up.
    audit
        The process's ``audit.AuditLog`` (schema already migrated).
    enqueuer
        Where complete EUS studies go (:class:`~dicom_node.enqueue.Enqueuer`).
    metrics
        Optional shared :class:`NodeMetrics` (a private one is made otherwise).
    export
        Run the export runner thread (default: when any result destination is configured).
    """

    def __init__(
        self,
        settings: Settings,
        audit: NodeAudit,
        enqueuer: Enqueuer,
        *,
        metrics: NodeMetrics | None = None,
        export: bool | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.enqueuer = enqueuer
        self.metrics = metrics or NodeMetrics()
        self.spool = Spool(settings.spool_dir)
        self.pending = PendingStudies(settings.outbox_path / "enqueue")
        self.outbox = Outbox(settings.outbox_path / "export")
        self.commit_answers = CommitAnswers.for_settings(settings)
        self.metrics.track_outbox(self.outbox.depth)
        self.assembler = StudyAssembler(
            settings, self.spool, audit, enqueuer, self.pending, self.metrics
        )
        self.reconciler = Reconciler(settings, audit, enqueuer, self.pending, self.outbox, self.spool,
                                     is_open=self.assembler.is_open, reopen=self.assembler.reopen)
        self._terminal_counts: dict[str, int] = {}
        # The reconciler every 10 min; terminal-state counts for /metrics every minute, off the scrape.
        self.cleaner = Cleaner(settings, audit, self.spool, self.outbox, is_open=self.assembler.is_open)
        self.assembler.periodic += [[600.0, self.reconcile, 0.0], [60.0, self._count_terminal, 0.0],
                                    [3600.0, lambda: self._clean(False), 0.0],
                                    [30.0, lambda: self._clean(True), 0.0]]
        self.metrics.track_studies(self.study_counts)
        try:
            access = AccessPolicy(settings.ae_title, settings.allowed_aes, settings.allowed_hosts)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.ssl_context = server_context(settings)
        self.context = NodeContext(
            settings=settings, spool=self.spool, audit=audit, metrics=self.metrics,
            access=access, on_instance=self.assembler.on_instance,
            tls=self.ssl_context is not None, chunked=settings.receive_chunked,
            # two jobs per concurrent C-STORE (EarlyPersist) must never queue behind each other
            pool=ThreadPoolExecutor(max_workers=2 * settings.max_associations + 2,
                                    thread_name_prefix="eusdx-io"),
        )
        run_export = bool(settings.result_destinations) if export is None else export
        self.exporter = ExportRunner(settings, audit, outbox=self.outbox, metrics=self.metrics) \
            if run_export else None
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._server_thread: threading.Thread | None = None
        self._export_stop = threading.Event()
        self._export_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.started = False

    # --- AE -------------------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        # The configured limit is enforced in handle_requested on admitted associations;
        # pynetdicom's own count includes threads of associations still closing, so it gets headroom.
        ae.maximum_associations = 2 * s.max_associations + 10
        ae.maximum_pdu_size = s.max_pdu_size
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.add_supported_context(VERIFICATION, list(TRANSFER_SYNTAXES[:2]))
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        # Storage Commitment answers (N-EVENT-REPORT) from archives we asked (PS3.4 J.3.3):
        # they usually come on a new association in which the archive takes the SCP role.
        ae.add_supported_context(STORAGE_COMMITMENT, list(TRANSFER_SYNTAXES[:2]),
                                 scu_role=True, scp_role=True)
        return ae

    def _handlers(self) -> list[Any]:
        ctx = self.context
        return [
            (evt.EVT_REQUESTED, handle_requested, [ctx]),
            (evt.EVT_ACCEPTED, handle_accepted, [ctx]),
            (evt.EVT_REJECTED, handle_rejected, [ctx]),
            (evt.EVT_CONN_CLOSE, handle_conn_close, [ctx]),
            (evt.EVT_DATA_RECV, handle_data_recv, [ctx]),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_N_EVENT_REPORT, handle_event_report, [self.commit_answers]),
        ]

    @property
    def port(self) -> int:
        """The bound DICOM port (useful when ``dicom_port`` was 0)."""
        if self._server is None:
            raise RuntimeError("node not started")
        return int(self._server.server_address[1])

    # --- life cycle -----------------------------------------------------------------------------

    def _clean(self, pressure_only: bool) -> None:
        from audit import AuditUnavailable

        try:
            if pressure_only:
                self.cleaner.relieve_pressure()
            else:
                self.cleaner.run()
        except AuditUnavailable as exc:
            log.error("cleaning postponed (deletions are audited first): %s", exc)

    def _count_terminal(self) -> None:
        from audit import TERMINAL_STATES, AuditUnavailable

        try:
            self._terminal_counts = self.audit.count_by_state(TERMINAL_STATES)
        except AuditUnavailable as exc:
            log.warning("study counts not refreshed: %s", exc)

    def study_counts(self) -> dict[str, int]:
        """Studies per state: the unsettled ones counted now (O(unsettled), index range), the terminal ones
        as counted at most a minute ago by the assembler thread (their number grows with history)."""
        from dicom_node.reconcile import UNSETTLED

        return {**self._terminal_counts, **self.audit.count_by_state(UNSETTLED)}

    def reconcile(self) -> list[tuple[str, str, str]]:
        """Drive on the studies a crash left half-way (:mod:`dicom_node.reconcile`); never raises for an
        audit outage (the next pass retries)."""
        from audit import AuditUnavailable

        try:
            return self.reconciler.run_once()
        except AuditUnavailable as exc:
            log.error("reconciler postponed: %s", exc)
            return []

    def start(self) -> None:
        """Recover state from the spool, start the assembler, exporter and listener.

        Raises
        ------
        OSError
            The DICOM port cannot be bound.
        """
        self.assembler.recover()
        self.reconcile()  # audited; before the assembler thread, so it sees the recovered studies
        self.assembler.start()
        if self.exporter is not None:
            self._export_thread = threading.Thread(
                target=self.exporter.run_forever, args=(self._export_stop,),
                name="eusdx-export", daemon=True,
            )
            self._export_thread.start()
        # A pynetdicom process-wide switch: all nodes of one process use the same mode.
        _pynetdicom.set_chunked_receive(self.context.chunked)
        # an all-spaces calling AE title is rejected (1/1/3) and audited, not aborted
        _pynetdicom.read_blank_calling_ae()
        _pynetdicom.register_storage(STORAGE_SOP_CLASSES)
        ae = self._make_ae()
        if self.context.chunked:
            # chunked data sets are written straight into the spool's temp folder, so that the
            # file is kept by rename, never copied (documented in dicom_node.receive)
            _pynetdicom.receive_chunks_into(ae, self.spool.tmp_dir)
        server = ae.make_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            ssl_context=self.ssl_context,
            evt_handlers=self._handlers(),
            server_class=_NoDelayServer,
        )
        # ae.shutdown()/server.shutdown() expect the server in the AE's list, as
        # ae.start_server(block=False) would have put it.
        _pynetdicom.attach_server(ae, server)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="eusdx-dicom-listener", daemon=True)
        thread.start()
        self._ae, self._server, self._server_thread = ae, server, thread
        self.started = True
        log.info("DICOM node listening", extra={"ae_title": self.settings.ae_title,
                                                "port": self.port, "tls": self.context.tls})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight associations finish (up to ``timeout``), then stop the
        assembler and exporter. Open studies stay in the spool for the next start."""
        if not self.started:
            self._stopped.set()
            return
        server, ae = self._server, self._ae
        assert server is not None and ae is not None
        server.shutdown()  # stops serve_forever and closes the listening socket
        deadline = time.monotonic() + timeout
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            log.warning("aborting association still running at shutdown")
            assoc.abort()
        self.assembler.stop()
        self.context.pool.shutdown(wait=True)
        _pynetdicom.receive_chunks_into(ae, None)
        self._export_stop.set()
        if self._export_thread is not None:
            self._export_thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.started = False
        self._stopped.set()
        log.info("DICOM node stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished; returns False on timeout."""
        return self._stopped.wait(timeout)
