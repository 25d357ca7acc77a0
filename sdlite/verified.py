"""A record of model files whose sha256 was already computed, so that a large bundle is hashed once, not
at every load (SD's U-Net: 3.4 GB, about 3 s of a 4.6 s start on 2 cores).

A record holds the file's device, inode, size, modification and status-change times (ns) and its
sha256. The status-change time cannot be set back by a program (unlike the modification time), so a
rewrite of the file misses the record and is hashed again. The records live in one JSON file under
$SDLITE_CACHE_DIR (default $XDG_CACHE_HOME/sdlite, else ~/.cache/sdlite); SDLITE_CACHE_DIR=off turns
them off. A record that cannot be read or written is only a missed shortcut: the file is hashed.

What a record trusts. Writes through a shared memory mapping that was opened before the file was
hashed change its bytes without changing any of those times, so a record is used only for a file that
nobody can open for writing any more: a regular file without write permission for anyone (bundles that
`python -m export` writes are read-only), owned by this user or root; any other file is hashed at every
load. The records file itself is used only when it is a regular file (not a link, not a FIFO) of at
most MAX_RECORDS_BYTES, owned by this user and writable by nobody else; its entries are checked for
shape. A process of the files' owner (or root) can still defeat this; SDLITE_CACHE_DIR=off hashes
every file at every load.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Callable

from .files import write_atomic
from .logs import progress_log

VERIFY_NOTICE_BYTES = 1_000_000  # smaller files hash in milliseconds: not worth a line
log = logging.getLogger("sdlite")

CACHE_DIR_ENV = "SDLITE_CACHE_DIR"
CACHE_OFF = "off"
RECORDS_FILE = "verified-files.json"
MAX_RECORDS = 256  # the oldest go first; a few bundles' worth of files
MAX_RECORDS_BYTES = 1 << 20  # a larger records file is ignored (256 records take about 60 KB)
_HEX = frozenset("0123456789abcdef")


def cache_dir() -> Path | None:
    """Where the records live, or None when they are turned off."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in (CACHE_OFF, "") else Path(chosen)
    return default_cache_dir()


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/sdlite, else ~/.cache/sdlite."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sdlite"


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _owner() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def trusted_for_records(status: os.stat_result) -> bool:
    """A file a record may vouch for: regular, writable by nobody, owned by this user or root."""
    owner = _owner()
    return (stat.S_ISREG(status.st_mode) and not status.st_mode & 0o222
            and (owner is None or status.st_uid in (owner, 0)))


def _valid(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("sha256"), str) and len(record["sha256"]) == 64
            and set(record["sha256"]) <= _HEX and isinstance(record.get("identity"), list) and len(record["identity"]) == 5
            and all(isinstance(v, int) and not isinstance(v, bool) for v in record["identity"]))


def _read(path: Path) -> dict:
    """The records, or {} when the file is missing, not ours, open to others, too large or malformed
    (never following a link, never waiting on a FIFO)."""
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return {}
    with os.fdopen(handle, "rb") as source:
        status = os.fstat(source.fileno())
        owner = _owner()
        if (not stat.S_ISREG(status.st_mode) or status.st_size > MAX_RECORDS_BYTES or status.st_mode & 0o022
                or (owner is not None and status.st_uid != owner)):
            log.debug("ignoring verified-file records %s: not a private regular file of this user under %d bytes", path, MAX_RECORDS_BYTES)
            return {}
        data = source.read(MAX_RECORDS_BYTES + 1)
    try:
        records = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(records, dict):
        return {}
    return {key: value for key, value in records.items() if isinstance(key, str) and _valid(value)}


def _write(path: Path, records: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic (concurrent loads see the old or the new records, never half) and private: records are trusted
        # only when nobody else can write them
        write_atomic(path, json.dumps(records).encode(), mode=0o600)
    except OSError as error:
        log.debug("could not record verified files in %s: %s", path, error)


"""Long first-time work a user should hear about (the CLI shows it without -v)."""


def _say_verifying(path: Path, size: int) -> None:
    if size >= VERIFY_NOTICE_BYTES:
        progress_log.info("verifying model file %s (%.0f MB, sha256 against the manifest; once per file)", path, size / 1e6)


def sha256_of(path: Path, compute: Callable[[Path], str]) -> str:
    """The file's sha256: from its record when the file is unchanged since it was hashed, else
    compute(path), recorded for the next load."""
    folder = cache_dir()
    if folder is None:
        return compute(path)
    key = os.path.realpath(path)
    status = os.stat(key)
    if not trusted_for_records(status):
        _say_verifying(path, status.st_size)
        return compute(path)  # someone may still write to it: no record can vouch for its bytes
    identity = _identity(status)
    records_path = folder / RECORDS_FILE
    record = _read(records_path).get(key)
    if isinstance(record, dict) and record.get("identity") == identity and isinstance(record.get("sha256"), str):
        return record["sha256"]
    _say_verifying(path, status.st_size)
    digest = compute(path)
    if _identity(os.stat(key)) == identity:  # not changed while it was read
        records = _read(records_path)
        records.pop(key, None)
        records[key] = {"identity": identity, "sha256": digest}
        _write(records_path, dict(list(records.items())[-MAX_RECORDS:]))
    return digest
