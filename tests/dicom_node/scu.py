"""A pynetdicom storage SCU for the tests that need to read exact status codes or send raw,
deliberately broken data sets (DCMTK's storescu refuses to send those)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE

from dicom_node._pynetdicom import send_chunked


def send(port: int, *items: Path | Dataset, aet: str = "PYSCU", raw: bool = False,
         contexts: list[tuple[str, str]] | None = None) -> list[int]:
    """Send items over one association; returns the status of each C-STORE.

    ``raw=True`` sends file data sets byte for byte (pynetdicom's chunked send), so a file whose
    data set contradicts its meta goes out exactly as crafted.
    """
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    wanted = contexts or []
    if not wanted:
        for item in items:
            if isinstance(item, Dataset):
                wanted.append((str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)))
            else:
                meta = pydicom.filereader.read_file_meta_info(item)
                wanted.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    for sop_class, ts in dict.fromkeys(wanted):
        ae.add_requested_context(sop_class, ts)
    with send_chunked(raw):
        assoc = ae.associate("127.0.0.1", port, ae_title="EUSDX")
        assert assoc.is_established, "association not established"
        statuses = []
        for item in items:
            rsp = assoc.send_c_store(item)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
        assoc.release()
    return statuses
