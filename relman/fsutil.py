"""Crash-safe file writes shared by the blob store, channels manifests and model cards."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable

# The temp names relman writes beside a target: `.NAME.PID-HEX.tmp` (atomic_write, bundles,
# exported folders) and `.NAME.PID.part` (archive copies). The PID says whose it is.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d{1,10})(?:-[0-9a-f]{8})?\.(?:tmp|part)")


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op on Windows, where folders cannot be fsynced)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(target: Path) -> Path:
    """A temp name beside `target` that `remove_stale_temp` recognises as this process's."""
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not). psutil is light; imported on use."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    except ValueError:  # a PID out of range
        return False


def remove_stale_temp(folder: Path, alive: Callable[[int], bool] = pid_alive) -> list[Path]:
    """Remove relman's temp files (and temp folders) in `folder` whose writer is gone: a writer
    killed between writing its temp file and renaming it leaves one behind, and nothing else
    ever would remove it. Only names of relman's own pattern are touched, and only when their
    PID is not a live process (this one counts as live). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_NAME.fullmatch(p.name)
        if not m:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or alive(pid):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue  # not ours to remove after all (permissions); the next pass tries again
        removed.append(p)
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder + fsync + os.replace (+ fsync of the folder): a reader sees
    the old file or the new one, never half of either."""
    tmp = temp_path(path)
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
