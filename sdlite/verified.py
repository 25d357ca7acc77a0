"""A record of model files whose sha256 was already computed, so that a large bundle is hashed once, not
at every load (SD's U-Net: 3.4 GB, about 3 s of a 4.6 s start on 2 cores).

A record holds the file's device, inode, size, modification and status-change times (ns) and its
sha256. The status-change time cannot be set back by a program (unlike the modification time), so any
rewrite of the file misses the record and is hashed again. The records live in one JSON file under
$SDLITE_CACHE_DIR (default $XDG_CACHE_HOME/sdlite, else ~/.cache/sdlite); SDLITE_CACHE_DIR=off turns
them off. A record that cannot be read or written is only a missed shortcut: the file is hashed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

log = logging.getLogger("sdlite")

CACHE_DIR_ENV = "SDLITE_CACHE_DIR"
CACHE_OFF = "off"
RECORDS_FILE = "verified-files.json"
MAX_RECORDS = 256  # the oldest go first; a few bundles' worth of files


def cache_dir() -> Path | None:
    """Where the records live, or None when they are turned off."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in (CACHE_OFF, "") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sdlite"


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _read(path: Path) -> dict:
    try:
        records = json.loads(path.read_text())
        return records if isinstance(records, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, records: dict) -> None:
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".verified-", dir=path.parent)
        with os.fdopen(handle, "w") as out:
            json.dump(records, out)
        os.replace(temporary, path)  # atomic: concurrent loads see the old or the new records, never half
    except OSError as error:
        log.debug("could not record verified files in %s: %s", path, error)
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)


def sha256_of(path: Path, compute: Callable[[Path], str]) -> str:
    """The file's sha256: from its record when the file is unchanged since it was hashed, else
    compute(path), recorded for the next load."""
    folder = cache_dir()
    if folder is None:
        return compute(path)
    key = os.path.realpath(path)
    identity = _identity(os.stat(key))
    records_path = folder / RECORDS_FILE
    record = _read(records_path).get(key)
    if isinstance(record, dict) and record.get("identity") == identity and isinstance(record.get("sha256"), str):
        return record["sha256"]
    digest = compute(path)
    if _identity(os.stat(key)) == identity:  # not changed while it was read
        records = _read(records_path)
        records.pop(key, None)
        records[key] = {"identity": identity, "sha256": digest}
        _write(records_path, dict(list(records.items())[-MAX_RECORDS:]))
    return digest
