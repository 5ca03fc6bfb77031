"""DICOM networking of eusdx: the storage SCP, its spool, study assembly and SR export.

Public surface: :class:`Node` (``dicom_node.app``), the :class:`Enqueuer` protocol and
:class:`BrokerUnavailable` (``dicom_node.enqueue``), :func:`submit` and :class:`ExportRunner`
(``dicom_node.export``), and :class:`Status`. Heavy modules are imported lazily so that
``import dicom_node.export`` from the worker does not start anything.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Node", "Enqueuer", "BrokerUnavailable", "CeleryEnqueuer", "Status", "submit",
           "ExportRunner"]

_LAZY = {
    "Node": "dicom_node.app",
    "Enqueuer": "dicom_node.enqueue",
    "BrokerUnavailable": "dicom_node.enqueue",
    "CeleryEnqueuer": "dicom_node.enqueue",
    "Status": "dicom_node.status",
    "submit": "dicom_node.export",
    "ExportRunner": "dicom_node.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dicom_node' has no attribute {name!r}")
