"""Content-addressed blob store: `objects/ab/cdef…` named by the sha256 of the bytes.

Writes go to `objects/tmp/<pid>-<random>.part`, are fsynced, and are renamed into place, so a
reader never sees half a blob and the same bytes are stored once. Blobs are made read-only
because versions are materialised by hard links. The store knows nothing about the database;
`Catalog` records which blobs a half-finished operation created (`pending_blobs`) so that a
crash never leaves an orphan behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterator

from relman.errors import CatalogError
from relman.fsutil import fsync_dir

CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    """Hash a file in chunks; returns (hex digest, size in bytes)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def ensure(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha[2:]

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put_file(self, src: Path, on_new: Callable[[str], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[str, int, bool]:
        """Copy `src` into the store. Returns (sha256, size, created).

        `on_new(sha)` runs before the blob is looked up or renamed into place, so the caller can
        record it as pending first: a crash after the rename then leaves a record to clean up
        by. It runs for blobs that already exist too: `relman gc` sweeps under the catalog's
        write lock and keeps pending blobs, so once the claim is committed an existing blob
        this write will reference cannot be swept between the lookup and the commit.
        `on_bytes(n)` follows the copy chunk by chunk (progress); if it raises (a cancelled
        job), the partial copy is removed and nothing is stored."""
        self.ensure()
        tmp = self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}.part"
        h = hashlib.sha256()
        size = 0
        try:
            try:
                with open(src, "rb") as fin, open(tmp, "wb") as fout:
                    while chunk := fin.read(CHUNK):
                        h.update(chunk)
                        fout.write(chunk)
                        size += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                    fout.flush()
                    os.fsync(fout.fileno())
            except OSError as e:  # a full disk, a quota, an unreadable source: say which
                raise CatalogError(f"{src}: could not be copied into the catalog store {self.root} "
                                   f"({e.strerror or e}); nothing was stored") from None
            sha = h.hexdigest()
            final = self.path(sha)
            if on_new is not None:  # claim first, even for a blob that exists: see the docstring
                on_new(sha)
            if final.is_file():
                return sha, size, False
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            return sha, size, True
        finally:
            if tmp.exists():
                tmp.unlink()

    def put_bytes(self, data: bytes, on_new: Callable[[str], None] | None = None) -> tuple[str, int, bool]:
        self.ensure()
        src = self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}.src.part"
        try:
            src.write_bytes(data)
            return self.put_file(src, on_new)
        finally:
            if src.exists():
                src.unlink()

    def remove(self, sha: str) -> None:
        p = self.path(sha)
        if p.exists():
            os.chmod(p, stat.S_IWUSR | stat.S_IRUSR)
            p.unlink()

    def verify(self, sha: str) -> str | None:
        """None when the blob is present and intact, else a short description of the problem."""
        p = self.path(sha)
        if not p.is_file():
            return "missing"
        actual, _ = sha256_file(p)
        if actual != sha:
            return f"content changed (now hashes to {actual[:12]}…)"
        return None

    def all_shas(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and len(d.name) == 2 and d.name != "tmp":
                for f in sorted(d.iterdir()):
                    yield d.name + f.name

    def link_or_copy(self, sha: str, dest: Path) -> None:
        """Place a blob at `dest`: a hard link when the file system allows, else a copy.

        A hard link shares the blob's inode, which is safe because blobs are read-only — except
        for root, whom file modes do not stop: a tool that rewrote a materialised file in place
        would silently change the stored blob. Root therefore always gets a copy."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.path(sha)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            shutil.copyfile(src, dest)
            return
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)

    def stale_temp_files(self, alive: Callable[[int], bool]) -> list[Path]:
        """`.part` files whose writing process is gone."""
        out = []
        if self.tmp.is_dir():
            for f in self.tmp.iterdir():
                pid_text = f.name.split("-", 1)[0]
                if not pid_text.isdigit() or not alive(int(pid_text)):
                    out.append(f)
        return out
