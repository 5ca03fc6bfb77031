"""The received data set as a file, without copies of the pixel data.

Two receive modes (``Settings.receive_chunked``):

* in memory (default): pynetdicom collects the data set in memory (``event.encoded_dataset()``);
  the node writes File Meta + data set to a spool temp file in one go. A full disk is met in our
  handler (0xA700) and an aborted transfer leaves nothing on disk.
* chunked: pynetdicom writes each incoming P-DATA fragment straight into a temporary DICOM file
  (``dicom_node._pynetdicom.set_chunked_receive``) while the peer is still sending; the node has that file
  created in ``<spool>/.tmp`` (``dicom_node._pynetdicom.receive_chunks_into``; Python's own temp
  directory is left alone) so that it is already on the spool's file system and is kept by an
  atomic rename, never copied; the data set is read through ``mmap``.
  Memory stays flat for huge cines and they arrive ~1.5x faster (bench/ingest.py), but a disk
  that fills mid-transfer fails inside pynetdicom (the association is aborted, no status), and
  the partial file of an aborted transfer stays in ``.tmp`` until the assembler's sweep
  (files untouched for ``network_timeout`` + 10 s) or the next start.

Either way the handler gets a :class:`Received`: a complete DICOM file in the spool's temp area
plus a zero-copy view of its data set for the header parser and the digest.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from dicom_node.spool import Spool
from eusdx.uids import UUID_ROOT, derived_uid

__all__ = ["Received", "receive", "IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION",
           "file_meta_bytes"]

# Derived (UUID version 5 under 2.25), so it is the same in every process and every installation.
IMPLEMENTATION_CLASS_UID = derived_uid(UUID_ROOT, "eusdx", "implementation", "1")
IMPLEMENTATION_VERSION = "EUSDX_0_1"


def file_meta_bytes(sop_class: str, sop_uid: str, ts: str, calling: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for a received data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if calling:
        meta.SourceApplicationEntityTitle = calling[:16]
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue()


def _meta_end(head: bytes) -> int:
    """Offset of the data set in a file written with a (0002,0000) group length."""
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("received file lacks File Meta group length")
    (group_len,) = struct.unpack_from("<L", head, 140)
    return 144 + int(group_len)


@dataclass
class Received:
    """One received instance as a complete DICOM file (meta + data set)."""

    path: Path
    size: int
    dataset_size: int
    owned: bool  # we created the file and must delete it when refusing
    _map: mmap.mmap | None = None
    _data: Any = None
    _offset: int = 0
    _meta: bytes = b""
    _views: list[memoryview] = field(default_factory=list)

    @property
    def data(self) -> memoryview:
        """The data set bytes exactly as received (zero-copy)."""
        if self._map is not None:
            view = memoryview(self._map)[self._offset:]
        else:
            view = memoryview(self._data)
        self._views.append(view)
        return view

    def digest(self) -> str:
        """SHA-256 (hex) of the whole file; hashlib releases the GIL on the large buffer."""
        h = hashlib.sha256()
        if self._map is not None:
            view = memoryview(self._map)
            try:
                h.update(view)
            finally:
                view.release()
        else:  # in memory: the same bytes the file holds, without reading it back (it may
            # already have been renamed into the spool by the time this runs)
            h.update(self._meta)
            h.update(self._data)
        return h.hexdigest()

    def close(self) -> None:
        """Release the mapping (the file itself stays where it is)."""
        for view in self._views:
            view.release()
        self._views.clear()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view still referenced (e.g. by a traceback): GC closes it
                pass
            self._map = None

    def discard(self) -> None:
        """Close, and delete the file if we created it (pynetdicom deletes its own)."""
        self.close()
        if self.owned:
            self.path.unlink(missing_ok=True)


def receive(event: Any, spool: Spool, calling_ae: str, *, chunked: bool) -> Received:
    """Turn the C-STORE event's data set into a :class:`Received` file.

    Raises
    ------
    OSError
        The temp file cannot be written or mapped.
    """
    if chunked:
        path = Path(event.dataset_path)
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(1024)
            offset = _meta_end(head)
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if mapped is None:
            raise ValueError("received file is empty")
        return Received(path=path, size=size, dataset_size=size - offset, owned=False,
                        _map=mapped, _offset=offset)
    data = event.encoded_dataset(include_meta=False)
    req = event.request
    meta = file_meta_bytes(str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                           str(event.context.transfer_syntax), calling_ae)
    temp = spool.new_temp()
    try:
        temp.write(meta)
        temp.write(data)
        temp.close()
    except OSError:
        temp.discard()
        raise
    return Received(path=temp.path, size=temp.size, dataset_size=len(data), owned=True,
                    _data=data, _meta=meta)
