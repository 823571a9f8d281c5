"""Crash-safe file writes shared by the blob store, channels manifests and model cards."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op on Windows, where folders cannot be fsynced)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder + fsync + os.replace (+ fsync of the folder): a reader sees
    the old file or the new one, never half of either."""
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def disk_full_error(exc: BaseException, where: Path) -> str | None:
    """A one-line 'disk is full' message when `exc` (an OSError, or a library's own wording of
    a short write, like torch's "unexpected pos") happened because `where` has no space left."""
    import errno
    import shutil

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device holding {where}"
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    text = str(exc)
    if free < (1 << 20) and ("unexpected pos" in text or "write" in text.lower() or "full" in text.lower()):
        return f"the disk holding {where} is full ({free:,} bytes free)"
    return None
