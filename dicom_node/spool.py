"""The spool: received instances on disk as ``<spool>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``.

Every write goes to a private temp file under ``<spool>/.tmp`` (same file system), is fsynced,
then atomically renamed into place, and the directory is fsynced (``eusdx.durable``), so that an
instance answered with Success survives a power cut or SIGKILL. UIDs are validated (digits and dots, at most 64
characters) before any path is built from them: nothing a peer sends can name a path outside the
spool.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eusdx.durable import fsync_dir, fsync_file, remove_durably
from eusdx.uids import InvalidUID, check_uid

__all__ = ["Spool", "SpoolError", "TempFile"]

_TMP = ".tmp"
_SUFFIX = ".dcm"


class SpoolError(OSError):
    """The spool cannot keep an instance (disk full, I/O error)."""


@dataclass
class TempFile:
    """A spool temp file being written."""

    path: Path
    fd: int
    size: int = 0
    closed: bool = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (loops over short writes)."""
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True

    def discard(self) -> None:
        """Close and delete the temp file; safe to call twice."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Spool:
    """Durable instance store rooted at ``root``.

    Thread-safe: handlers of concurrent associations call it; writes of the same SOP Instance
    are serialised by :meth:`lock_for`.

    Parameters
    ----------
    root
        The spool directory; created (with its ``.tmp``) if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / _TMP
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(64)]
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        # A temp file left by a crash was never acknowledged with Success, so it is not ours to keep.
        for stale in self.tmp_dir.iterdir():
            if stale.is_file():
                stale.unlink(missing_ok=True)

    # --- paths ------------------------------------------------------------------------------

    def study_dir(self, study_uid: str) -> Path:
        """Directory of one study; raises :class:`InvalidUID` for an unsafe UID."""
        return self.root / check_uid(study_uid, "StudyInstanceUID")

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        """Final path of an instance; raises :class:`InvalidUID` for an unsafe UID."""
        return self.study_dir(study_uid) / (check_uid(sop_uid, "SOPInstanceUID") + _SUFFIX)

    def lock_for(self, sop_uid: str) -> threading.Lock:
        """A lock shared by every writer of ``sop_uid`` (striped; cheap to hold briefly)."""
        return self._locks[hash(sop_uid) % len(self._locks)]

    # --- writing ----------------------------------------------------------------------------

    def new_temp(self) -> TempFile:
        """Open a fresh temp file in the spool's own file system."""
        path = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        return TempFile(path=path, fd=fd)

    @staticmethod
    def sync_file(path: Path) -> None:
        """fsync a file's content (first half of making an instance durable; :meth:`place` is the second).

        Raises
        ------
        SpoolError
            The fsync failed.
        """
        try:
            fsync_file(path)
        except OSError as exc:
            raise SpoolError(exc.errno, f"cannot sync instance: {exc.strerror}") from exc

    def place(self, source: Path, study_uid: str, sop_uid: str) -> Path:
        """Rename a file synced by :meth:`sync_file` into ``<study>/<sop>.dcm`` (replacing what is
        there; copied first when it lives on another file system), fsync the directory (and the
        spool root when the study directory is new). When this returns the instance survives a crash.

        Raises
        ------
        InvalidUID
            A UID is unsafe as a path component.
        SpoolError
            A write, fsync or rename failed.
        """
        final = self.path_for(study_uid, sop_uid)
        try:
            created = False
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                created = True
            try:
                os.replace(source, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                local = self.tmp_dir / f"{uuid.uuid4().hex}.part"
                shutil.copyfile(source, local)
                fsync_file(local)
                os.replace(local, final)
            fsync_dir(final.parent)
            if created:
                fsync_dir(self.root)
        except OSError as exc:
            raise SpoolError(exc.errno, f"cannot persist instance: {exc.strerror}") from exc
        return final

    def backup(self, path: Path) -> Path:
        """Hard-link ``path`` under ``.tmp`` so an overwrite can be undone; returns the link."""
        link = self.tmp_dir / f"{uuid.uuid4().hex}.bak"
        os.link(path, link)
        return link

    def restore(self, backup: Path, path: Path) -> None:
        """Undo an overwrite: put ``backup`` back at ``path`` durably."""
        os.replace(backup, path)
        fsync_dir(path.parent)

    def remove(self, path: Path) -> None:
        """Delete one instance durably (used when its audit row could not be written)."""
        remove_durably(path)

    def sweep_tmp(self, older_than: float) -> int:
        """Delete temp files untouched for ``older_than`` seconds (transfers that were aborted
        mid-way in chunked receive); returns how many were removed."""
        limit = time.time() - older_than
        removed = 0
        for entry in self.tmp_dir.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < limit:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # --- reading ----------------------------------------------------------------------------

    def fill_percent(self) -> float:
        """How full the spool's file system is, in percent."""
        usage = shutil.disk_usage(self.root)
        return 100.0 * (usage.total - usage.free) / usage.total if usage.total else 100.0

    def studies(self) -> Iterator[str]:
        """Study UIDs present in the spool (valid-UID directories only)."""
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    yield check_uid(entry.name, "StudyInstanceUID")
                except InvalidUID:
                    continue

    def instances(self, study_uid: str) -> list[Path]:
        """Instance files of one study, sorted by name."""
        folder = self.study_dir(study_uid)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == _SUFFIX and p.is_file())

    def remove_study(self, study_uid: str) -> None:
        """Delete a whole study directory (retention of non-routed studies)."""
        folder = self.study_dir(study_uid)
        shutil.rmtree(folder, ignore_errors=False)
        fsync_dir(self.root)
