"""Durable writes and content hashes: the one module every store of eusdx writes through.

A write is *durable* when a power cut after the call returns cannot lose it and cannot leave a torn file:
the data go to a temporary file in the same directory, the file is fsynced, renamed over the target
(``os.replace`` is atomic on POSIX file systems) and the directory is fsynced so the rename itself survives
(see fsync(2), rename(2); the same recipe SQLite and PostgreSQL use for their own files).

Used by the spool, the enqueue and export outboxes, the embedded queue, delivery counters and model bundles.
No other module opens a file for writing and fsyncs it itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CHUNK_BYTES",
    "TMP_PREFIX",
    "atomic_write_bytes",
    "atomic_write_chunks",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "fsync_dir",
    "fsync_file",
    "read_json_object",
    "remove_durably",
    "sha256_bytes",
    "sha256_file",
    "sweep_temporaries",
]

CHUNK_BYTES = 1 << 20
"""Read size used when hashing files, bytes."""

TMP_PREFIX = ".tmp-"
"""Prefix of the temporary files this module creates (``sweep_temporaries`` removes leftovers)."""


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex characters."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content as 64 lower-case hex characters, read in 1 MiB chunks.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync an existing file (its data and metadata)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that entries created, renamed or removed in it survive a power cut.

    File systems that cannot fsync a directory (some network and FUSE mounts answer EINVAL) are accepted
    as they are; every other error is raised.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (22,):  # EINVAL: the file system does not support it
            raise
    finally:
        os.close(fd)


def _tmp_path(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{target.name}.{uuid.uuid4().hex}")


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes], *,
                        mode: int | None = None, sync: bool = True) -> str:
    """Write ``chunks`` to ``path`` atomically and (with ``sync``) durably; return the SHA-256 hex.

    Parameters
    ----------
    path
        Target file; its directory must exist.
    chunks
        The content, in pieces (so a large file is never held twice in memory).
    mode
        Permission bits of the new file (e.g. ``0o600`` for keys); default: the umask's.
    sync
        fsync the file and its directory. Only callers that fsync in a batch themselves turn it off.

    Raises
    ------
    OSError
        Nothing was replaced: the temporary file is removed and the old content (if any) stays.
    """
    h = hashlib.sha256()

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                h.update(chunk)
                fh.write(chunk)
        if mode is not None:
            os.chmod(tmp, mode)

    atomic_write_with(path, write, sync=sync)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, *,
                       mode: int | None = None, sync: bool = True) -> str:
    """Write ``data`` to ``path`` atomically and durably; return its SHA-256 hex (see ``atomic_write_chunks``)."""
    return atomic_write_chunks(path, [bytes(data) if not isinstance(data, bytes) else data],
                               mode=mode, sync=sync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None,
                      sync: bool = True) -> str:
    """Write UTF-8 ``text`` atomically and durably; return the SHA-256 hex of the bytes written."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, sync=sync)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, mode: int | None = None,
                      sync: bool = True, indent: int | None = None) -> str:
    """Write ``obj`` as JSON (sorted keys, UTF-8) atomically and durably; return the SHA-256 hex.

    Raises
    ------
    TypeError
        ``obj`` is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False)
    return atomic_write_text(path, text + ("\n" if indent is not None else ""), mode=mode, sync=sync)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], object], *,
                      sync: bool = True) -> None:
    """Let ``write(tmp)`` create the content at a temporary path, then make it ``path`` atomically and durably.

    For writers that insist on a path of their own (``pydicom.Dataset.save_as``, a file copy).

    Raises
    ------
    OSError, Exception
        Whatever ``write`` raised, or the fsync/rename failed: the temporary file is removed, the old
        content (if any) stays.
    """
    target = Path(path)
    tmp = _tmp_path(target)
    try:
        write(tmp)
        if sync:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(target.parent)


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object written by :func:`atomic_write_json`.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        The file is not JSON or does not hold an object (``json.JSONDecodeError`` is a ``ValueError``).
    """
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{Path(path).name} does not hold a JSON object")
    return data


def remove_durably(path: str | os.PathLike[str]) -> bool:
    """Remove a file and fsync its directory; return False when it was already gone."""
    p = Path(path)
    try:
        p.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(p.parent)
    return True


def sweep_temporaries(directory: str | os.PathLike[str]) -> int:
    """Remove temporary files a crash left in ``directory`` (not recursive); return how many."""
    n = 0
    for stale in Path(directory).glob(f"{TMP_PREFIX}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            n += 1
    return n
