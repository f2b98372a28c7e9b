"""Reads a legacy (non-zip) `torch.save` checkpoint into numpy arrays, without torch.

A torch checkpoint is a pickle, and unpickling can run arbitrary code. This reader accepts
only the handful of globals a state dict of plain tensors needs and refuses everything else,
so a tampered or malicious file fails with an error instead of executing.

The legacy format is a sequence of pickles followed by raw storage bytes:

    magic number | protocol version | system info | the object (tensors refer to storages
    by key) | sorted list of storage keys | for each key: int64 element count + raw data
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from typing import BinaryIO, Dict, Tuple

import numpy as np

_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_PROTOCOL_VERSION = 1001


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader can safely turn into arrays."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dtype).newbyteorder('<'))
    for name, dtype in [('FloatStorage', np.float32), ('DoubleStorage', np.float64),
                        ('HalfStorage', np.float16), ('LongStorage', np.int64),
                        ('IntStorage', np.int32), ('ByteStorage', np.uint8)]
}


@dataclasses.dataclass
class _Storage:
    key: str
    storage_type: _StorageType
    numel: int
    data: np.ndarray = None


@dataclasses.dataclass
class _TensorRef:
    """A tensor as the pickle describes it; materialised once the storages are read."""
    storage: _Storage
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointError(f'storage {self.storage.key} was never read')
        itemsize = self.storage.data.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if self.size and needed > len(self.storage.data):
            raise CheckpointError(f'tensor of size {self.size} overruns storage {self.storage.key}')
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset:], shape=self.size,
            strides=[s * itemsize for s in self.stride]).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError('tensor does not refer to a storage')
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size),
                      tuple(int(s) for s in stride))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts of tensors and nothing else."""

    _ALLOWED = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
        **{('torch', name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
    }

    def __init__(self, file: BinaryIO, storages: Dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f'the checkpoint refers to {module}.{name}, which a file of tensors has no reason '
                f'to contain; refusing to load it') from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
            raise CheckpointError(f'unexpected persistent id {pid!r}')
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f'unexpected storage type {storage_type!r}')
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError('storage views are not supported')
        if key not in self._storages:
            self._storages[key] = _Storage(str(key), storage_type, int(numel))
        return self._storages[key]


def _load_plain(file: BinaryIO):
    """One of the header pickles: only plain values (ints, dicts, strings) are accepted."""
    return RestrictedUnpickler(file, {}).load()


def read_legacy_checkpoint(file: BinaryIO) -> Dict[str, np.ndarray]:
    """A legacy torch.save file of {name: tensor} -> {name: numpy array}."""
    try:
        if _load_plain(file) != _MAGIC_NUMBER:
            raise CheckpointError('not a legacy torch.save file (wrong magic number)')
        if _load_plain(file) != _PROTOCOL_VERSION:
            raise CheckpointError('unsupported torch.save protocol version')
        system_info = _load_plain(file)
        if not system_info.get('little_endian', False):
            raise CheckpointError('big-endian checkpoints are not supported')
        storages: Dict[str, _Storage] = {}
        state = RestrictedUnpickler(file, storages).load()
        keys = _load_plain(file)
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as error:
        raise CheckpointError(f'not a readable legacy torch checkpoint: {error}') from None
    if not isinstance(state, dict):
        raise CheckpointError('the checkpoint does not hold a dict of tensors')
    if set(keys) != set(storages):
        raise CheckpointError('storage list does not match the tensors')
    for key in keys:
        storage = storages[key]
        numel = int.from_bytes(_read_exactly(file, 8), 'little')
        if numel != storage.numel:
            raise CheckpointError(f'storage {key}: {numel} elements, header said {storage.numel}')
        raw = _read_exactly(file, numel * storage.storage_type.dtype.itemsize)
        storage.data = np.frombuffer(raw, storage.storage_type.dtype)
    if file.read(1):
        raise CheckpointError('unexpected data after the last storage')
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _TensorRef):
            raise CheckpointError(f'{name} is not a tensor')
        arrays[name] = tensor.to_numpy()
    return arrays


def read_legacy_checkpoint_bytes(data: bytes) -> Dict[str, np.ndarray]:
    return read_legacy_checkpoint(io.BytesIO(data))


def _read_exactly(file: BinaryIO, count: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise CheckpointError('the checkpoint is truncated')
    return data
