"""Reading a PyTorch state dict (.pth: torch's zip archive) without torch, as hostile input.

A .pth file is a zip archive holding `PREFIX/data.pkl` (a pickle of an OrderedDict of tensors) and one
file per storage, `PREFIX/data/KEY`. Unpickling runs whatever callables the pickle names, so the reader
admits exactly the globals a plain state dict uses (collections.OrderedDict, torch._utils'
_rebuild_tensor_v2 / _rebuild_parameter, the float storage types) and replaces each with a function that
only records what it was given. Tensors must be contiguous views of their storage, storages are read once,
and no two tensors may share bytes: reading costs at most the archive's size, whatever the pickle claims.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from .errors import BundleError
from .files import read_regular

MAX_PICKLE_BYTES = 1 << 20  # a TAE state dict's pickle is about 11 kB
MAX_MEMBERS = 4096
MAX_TENSORS = 2048
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2")}
_REBUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}


class _Storage:
    """A storage type named in the pickle (a marker: never called)."""

    def __init__(self, name: str):
        self.name = name


class _TensorRef:
    def __init__(self, key: str, dtype: np.dtype, offset: int, shape: tuple, stride: tuple):
        self.key, self.dtype, self.offset, self.shape, self.stride = key, dtype, offset, shape, stride


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, tuple) or len(value) > 8 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 30 for v in value):
        raise BundleError(f"a tensor's {what} is not a short tuple of sizes")
    return value


def _rebuild_tensor(storage, offset, shape, stride, *rest):
    if not isinstance(storage, tuple) or len(storage) != 2:
        raise BundleError("a tensor does not name a storage")
    key, dtype = storage
    shape, stride = _int_tuple(shape, "shape"), _int_tuple(stride, "stride")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 1 << 34:
        raise BundleError("a tensor's storage offset is invalid")
    expected, step = [], 1
    for size in reversed(shape):
        expected.append(step)
        step *= size
    if len(stride) != len(shape) or (math.prod(shape) > 1 and tuple(reversed(expected)) != stride):
        raise BundleError(f"a tensor of shape {shape} has strides {stride}: only contiguous tensors are read")
    return _TensorRef(key, dtype, offset, shape, stride)


def _rebuild_parameter(data, *rest):
    if not isinstance(data, _TensorRef):
        raise BundleError("a parameter does not hold a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise BundleError("the state dict is built with arguments")
    return collections.OrderedDict()


class _StateDictUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its memo is a dict, so a pickle naming
    # memo slot 2**31 costs one entry (the C unpickler allocates the whole array first: seconds and gigabytes)
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _Storage(name)
        raise BundleError(f"the state dict names {module}.{name}: sdlite reads only tensors "
                          f"({', '.join(STORAGE_DTYPES)}) in an OrderedDict"[:300])

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or not isinstance(pid[1], _Storage)
                or not isinstance(pid[2], str) or not pid[2].isdigit() or len(pid[2]) > 9):
            raise BundleError("the state dict names a storage sdlite does not read")
        return (pid[2], STORAGE_DTYPES[pid[1].name])


def read_state_dict(path: Path, *, max_bytes: int) -> dict[str, np.ndarray]:
    """The tensors of a .pth state dict as float32 arrays, checked; BundleError for anything else."""
    data = read_regular(path, max_bytes, "a .pth state dict", follow_links=True)
    try:
        return _read(data, path)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, struct.error, EOFError, ValueError, TypeError, LookupError,
            AttributeError, IndexError, OverflowError, MemoryError, RecursionError, NotImplementedError, UnicodeError) as exc:
        raise BundleError(f"{path} is not a readable .pth state dict ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read(data: bytes, path: Path) -> dict[str, np.ndarray]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise BundleError(f"{path} holds {len(members)} files; a state dict has far fewer")
    pickles = [m for m in members if m.filename.endswith("/data.pkl") and m.filename.count("/") == 1]
    if len(pickles) != 1:
        raise BundleError(f"{path} is not a torch archive (it needs one PREFIX/data.pkl)")
    prefix = pickles[0].filename[: -len("data.pkl")]
    by_name = {m.filename: m for m in members}
    for member in members:
        if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1 or member.file_size > len(data):
            raise BundleError(f"{path}: member {member.filename[:80]!r} is compressed, encrypted or larger than the archive")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise BundleError(f"{path}: its pickle has {pickles[0].file_size} bytes; a state dict's has far fewer")
    order = archive.read(prefix + "byteorder") if prefix + "byteorder" in by_name else b"little"
    if order != b"little":
        raise BundleError(f"{path} stores {order[:20]!r}-endian data; sdlite reads little-endian archives")
    state = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0]))).load()
    if not isinstance(state, dict) or len(state) > MAX_TENSORS:
        raise BundleError(f"{path} does not hold a state dict (an OrderedDict of at most {MAX_TENSORS} tensors)")
    used: dict[str, list] = {}
    for name, ref in state.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise BundleError(f"{path}: entry {str(name)[:80]!r} is not a named tensor")
        used.setdefault(ref.key, []).append((ref.offset, ref.offset + math.prod(ref.shape), name))
    storages = {}
    for key, spans in used.items():
        member = by_name.get(f"{prefix}data/{key}")
        if member is None:
            raise BundleError(f"{path}: storage {key} is missing")
        dtypes = {state[name].dtype for *_, name in spans}
        if len(dtypes) != 1:
            raise BundleError(f"{path}: storage {key} is read as several types")
        itemsize = next(iter(dtypes)).itemsize
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                raise BundleError(f"{path}: tensors {first!r} and {second!r} share storage bytes")
        if spans[-1][1] * itemsize > member.file_size:
            raise BundleError(f"{path}: tensor {spans[-1][2]!r} lies outside its storage")
        storages[key] = archive.read(member)  # each storage once: bounded by the archive's size
    tensors = {}
    for name, ref in state.items():
        raw = np.frombuffer(storages[ref.key], dtype=ref.dtype, count=math.prod(ref.shape), offset=ref.offset * ref.dtype.itemsize)
        if ref.dtype == np.dtype("<u2"):
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.astype(np.float32).reshape(ref.shape)
    return tensors
