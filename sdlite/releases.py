"""Every published release of the TAE weights, pinned by commit and git blob hash.

The weights live in madebyollin/taesd on GitHub as .pth files; a file at a commit never changes, and its git
blob hash (sha1 of b"blob SIZE\\0" + content) is checked here before anything is built from it, so the
server (GitHub, or a mirror named by $SDLITE_HUB_URL) is not trusted. A name without a version means the
release DEFAULT_VERSION names: one fixed release per sdlite release, never a moving branch.
Source of the table: ../shared/notes/tae-versions.md (read from the repository's history).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from .errors import ModelNotFoundError

REPOSITORY = "madebyollin/taesd"
SEPARATOR = "@"


@dataclass(frozen=True)
class PinnedFile:
    file: str
    commit: str
    blob: str  # git blob sha1 of the file


@dataclass(frozen=True)
class Release:
    name: str  # taesd, taesdxl, taesd3, taef1, taef2
    version: str
    space: str
    encoder: PinnedFile
    decoder: PinnedFile

    @property
    def label(self) -> str:
        return f"{self.name}{SEPARATOR}{self.version}"


_C = {  # full commit hashes
    "5223a3f": "5223a3f14cfe6154f12d88595e5bb4829b89a9fc", "5ca067b": "5ca067bc2cba99df0c9ecb613e224a75852471d8",
    "63436d3": "63436d3e69437f0c386a7e573918f35ebcae9047", "7f572ca": "7f572ca629c9b0d3c9f71140e5f501e09f9ea280",
    "789d46c": "789d46c4c8a191ec9fcb20994ed0697a0cc8b4a9", "58a76e0": "58a76e0018208dc3d3c56dd441cc42117c554c06",
    "8909b44": "8909b44e3befaa0efa79c5791e4fe1c4d4f7884e", "899155b": "899155b16ee7462071452a45f2687b94eae96d08",
    "5cccb12": "5cccb12dc72074a4be35680c3b108548a7c69978",
}
_TABLE = (  # name, version, space, (encoder commit, blob), (decoder commit, blob)
    ("taesd", "1.0", "sd1", ("5223a3f", "96eecc825f3b2608d73bd90bc7f99ca21c1c778b"), ("5223a3f", "a5ceafddeaafc747c130f26da94b9c98ab0d74e6")),
    ("taesd", "1.1", "sd1", ("5ca067b", "67f645bc18f072c00bbe549701e76edaae626a8d"), ("5ca067b", "659267da74b4c8d3bf230fd33147bcaebad64b40")),
    ("taesd", "1.2", "sd1", ("63436d3", "65f85afc58480128926e52086fbf0fdc61c2c9b5"), ("63436d3", "a58532d3216a5d88b969f18e570cae74139fcdba")),
    ("taesd", "1.3", "sd1", ("63436d3", "65f85afc58480128926e52086fbf0fdc61c2c9b5"), ("7f572ca", "5915a429fc08eba4adf62bf74f96705b8b0d5c1f")),
    ("taesdxl", "1.0", "sdxl", ("789d46c", "fb2f91a3849c8e25da9c1502264d0695215de959"), ("789d46c", "f2b34452ac30220a92a971a9b54b1813613933af")),
    ("taesdxl", "1.1", "sdxl", ("5ca067b", "7dfaf3c79a02f412b8c88ddb3cd86ce18d02838f"), ("5ca067b", "d29b1dd380d10065efeb274707948b71887bff74")),
    ("taesdxl", "1.2", "sdxl", ("63436d3", "56dfb7ed13ac774bc28dcd981f072f26eb7c5e99"), ("63436d3", "0cff0d45939e968d59a5fcf3f1903007fe8585e3")),
    ("taesdxl", "1.3", "sdxl", ("63436d3", "56dfb7ed13ac774bc28dcd981f072f26eb7c5e99"), ("7f572ca", "477bc7e9604f418029508e72ac8719bb9d048291")),
    ("taesd3", "1.0", "sd3", ("58a76e0", "9678667c0e3e4b648a36daaa8094b1732ae4fb67"), ("58a76e0", "7943be72a9151d0b330c5d8a4fbb885d889b60a1")),
    ("taef1", "1.0", "flux", ("8909b44", "33d29b315d606b0c7efad49b27fef69887a60fce"), ("8909b44", "0052642b054c2cb6e1b40e4cf43777774a98cdf9")),
    ("taef1", "1.1", "flux", ("899155b", "d8ee13fa3a1ff9a92643669d718e4b0827daafa5"), ("899155b", "b772c9c4e6d3b79d06b277be59296389591783d3")),
    ("taef2", "1.0", "flux2", ("5cccb12", "8d738aba02f7ba9d156712489322dc5c43d5db1c"), ("5cccb12", "f4da1ec48cb805b5ee8deb22cfad03f48fe52f64")),
)
RELEASES: dict[tuple[str, str], Release] = {
    (name, version): Release(name, version, space, PinnedFile(f"{name}_encoder.pth", _C[enc[0]], enc[1]),
                             PinnedFile(f"{name}_decoder.pth", _C[dec[0]], dec[1]))
    for name, version, space, enc, dec in _TABLE
}
DEFAULT_VERSION = {"taesd": "1.3", "taesdxl": "1.3", "taesd3": "1.0", "taef1": "1.1", "taef2": "1.0"}
"""What a name without a version means in this sdlite release (the newest release of each at the time)."""
NAMES = tuple(DEFAULT_VERSION)
DEFAULT_MODEL = "taesd"
"""What compress uses when no model is named (and $SDLITE_MODEL and the models folder name none)."""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_release_name(model: str) -> bool:
    """Whether `model` is written as a TAE name (taesd, taesd@1.2), known or not."""
    name = model.partition(SEPARATOR)[0]
    return name in DEFAULT_VERSION or (SEPARATOR in model and name.startswith("tae"))


def versions(name: str) -> list[str]:
    return [v for (n, v) in RELEASES if n == name]


def lookup(model: str) -> Release:
    """The release `model` names ("taesd", "taesd@1.2"); ModelNotFoundError listing the choices otherwise."""
    name, _, version = model.partition(SEPARATOR)
    if name not in DEFAULT_VERSION:
        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ModelNotFoundError(f"unknown TAE model {name!r}: {hint}choose one of {', '.join(NAMES)} (optionally @version)")
    version = version or DEFAULT_VERSION[name]
    release = RELEASES.get((name, version))
    if release is None:
        raise ModelNotFoundError(f"{name} has no release {version!r}; its releases: {', '.join(versions(name))}")
    return release


def suggestion(model: str) -> str | None:
    """A TAE name close to a misspelt model name ("tasd" -> "taesd"), or None."""
    close = difflib.get_close_matches(model.partition(SEPARATOR)[0], NAMES, n=1, cutoff=0.7)
    return close[0] if close else None
