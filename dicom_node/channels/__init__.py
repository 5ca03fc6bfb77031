"""Result channels: one module per destination kind, all driven by the one export outbox.

The :class:`~dicom_node.export.ExportRunner` takes a due ``(item, destination)`` pair from the
outbox, finds the destination's :class:`Channel` with :func:`channel_for` and calls
:meth:`Channel.deliver` (or :meth:`Channel.poll` for a destination waiting for a Storage
Commitment answer). A channel either returns an :class:`Outcome` or raises
:class:`eusdx.failures.DeliveryError`: ``permanent=True`` sends the destination to dead-letter at
once (the peer refused the SOP class, answered a failure status, or an HTTP 4xx other than
408/429), otherwise the runner retries with back-off. Reasons name what was refused.

=================  ===========================================  =================================
kind               module                                       confirmation kept as
=================  ===========================================  =================================
``cstore``         :mod:`dicom_node.channels.cstore`            ``sent`` (C-STORE Success/Warning)
``cstore-commit``  :mod:`dicom_node.channels.commit`            ``committed`` (N-EVENT-REPORT)
``stowrs``         :mod:`dicom_node.channels.stowrs`            ``committed`` (200, all stored)
``webhook``        :mod:`dicom_node.channels.webhook`           ``sent`` (HTTP 2xx)
``hl7``            :mod:`dicom_node.channels.hl7`               ``sent`` (HL7 ACK AA)
=================  ===========================================  =================================

A new kind (e.g. ATNA) is a module with a class following :class:`Channel`, one entry in
``_KINDS`` below and one in ``eusdx.config.DESTINATION_KINDS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eusdx.config import Destination, Settings

__all__ = ["Channel", "Item", "Outcome", "channel_for"]


@dataclass(frozen=True)
class Item:
    """One outbox item as a channel sees it.

    Attributes
    ----------
    record
        The item's ``item.json`` (``study_uid``, ``sop_uid``, ``sop_class_uid``, ``kind``...).
    state
        This destination's record (``attempts``, ``transaction_uid``, ``requested_at``...).
    object_path
        The DICOM file (or, for events, the JSON file) to deliver.
    """

    record: dict[str, Any]
    state: dict[str, Any]
    object_path: Path

    @property
    def is_event(self) -> bool:
        """True for webhook notices (failure, dead letter), which carry no DICOM object."""
        return self.record.get("kind") == "event"


@dataclass(frozen=True)
class Outcome:
    """What one delivery (or poll) achieved.

    Attributes
    ----------
    state
        The destination's new outbox state: ``sent``, ``committed`` or ``commit-pending``.
    detail
        A plain sentence for the audit row and ``eusdx outbox list`` (``None`` when nothing to say).
    fields
        Extra per-destination fields to keep (``transaction_uid``, ``sent_sop_uid``...).
    next_due
        For ``commit-pending``: when the runner looks again (epoch seconds).
    """

    state: str
    detail: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    next_due: float | None = None


class Channel(Protocol):
    """A way to deliver outbox items to one destination."""

    def deliver(self, item: Item) -> Outcome:
        """Send the item once.

        Raises
        ------
        eusdx.failures.DeliveryError
            Not delivered; ``permanent`` says whether a retry can help.
        """
        ...

    def poll(self, item: Item, now: float) -> Outcome | None:
        """For ``commit-pending``: the outcome once known, ``None`` while still waiting.

        Raises
        ------
        eusdx.failures.DeliveryError
            The archive refused to commit, or no answer came in time (transient: retried).
        """
        ...


_KINDS: dict[str, tuple[str, str]] = {
    "cstore": ("dicom_node.channels.cstore", "CStoreChannel"),
    "cstore-commit": ("dicom_node.channels.commit", "CommitChannel"),
    "stowrs": ("dicom_node.channels.stowrs", "StowChannel"),
    "webhook": ("dicom_node.channels.webhook", "WebhookChannel"),
    "hl7": ("dicom_node.channels.hl7", "Hl7Channel"),
}


def channel_for(settings: Settings, destination: Destination) -> Channel:
    """The channel object of ``destination`` (modules are imported on first use).

    Raises
    ------
    KeyError
        No channel is registered for the destination's kind.
    """
    module, name = _KINDS[destination.kind]
    cls = getattr(importlib.import_module(module), name)
    return cls(settings, destination)  # type: ignore[no-any-return]  # cls: looked up by name in _KINDS
