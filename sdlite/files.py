"""Files as untrusted input and output, one place for each job: bounded reads of regular files, bounded JSON,
paths that must stay inside a folder, sha256, and the one atomic writer. No other sdlite module opens a
file for these jobs by itself."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import BundleError

MAX_JSON_BYTES = 1 << 20
"""A manifest or config.json larger than this is refused before it is parsed."""
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_regular(path: Path, limit: int, what: str, *, follow_links: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (what: how the error calls such a file); a
    FIFO, device, folder (or, unless follow_links, a symbolic link) or a larger file is a BundleError."""
    try:
        info = path.stat() if follow_links else path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise BundleError(f"{path} has {info.st_size} bytes, over the {limit} {what} may have")
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}"[:300]) from None


def read_json(path: Path, limit: int = MAX_JSON_BYTES, what: str = "a bundle's JSON", *, follow_links: bool = False) -> dict:
    """A JSON object from a regular file of at most `limit` bytes; anything else is a BundleError."""
    try:
        value = json.loads(read_regular(path, limit, what, follow_links=follow_links))
    except BundleError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise BundleError(f"{path} does not hold a JSON object")
    return value


def inside(bundle: Path, relative, what: str) -> Path:
    """bundle / relative, refused unless it names a place inside the bundle: no absolute paths, no '..',
    no symbolic link leading out."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise BundleError(f"{bundle}: {what} must be a relative path inside the bundle, got {relative!r}")
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or relative.startswith(("/", "\\")):
        raise BundleError(f"{bundle}: {what} {relative!r} points outside the bundle; a manifest may name only files inside it")
    target = bundle / relative
    root = os.path.realpath(bundle)
    if os.path.commonpath([root, os.path.realpath(target)]) != root:
        raise BundleError(f"{bundle}: {what} {relative!r} leads outside the bundle (a symbolic link); refusing to read it")
    return target


def write_atomic(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `target`, then move it into place in one step: no reader ever
    sees half a file. The file gets the process's umask (or `mode`)."""
    target = Path(target)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, mode if mode is not None else 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
