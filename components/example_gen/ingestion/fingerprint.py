"""ImageExampleGen's driver: TFX's FileBasedDriver with an input fingerprint of the whole tree.

TFX re-runs an ExampleGen only when the fingerprint of its input changes (exec property
`input_fingerprint`: number, total size and modification times of the files its input
patterns match). Two things make TFX's own fingerprint wrong for image folders:

- a glob cannot recurse: `*/*` sees the files directly in a class folder, not an image
  replaced two sub-folders down, so a changed data set would be served from the cache;
- it crashes (UnicodeDecodeError inside tf.io.gfile.glob) on a file name that is not UTF-8,
  before ingestion could skip and report that file.

So the input processor walks the whole tree (files and folders, without following symbolic
links) and fingerprints it the way TFX does. Everything else is TFX's: span 0, no version,
the patterns passed on unchanged, the output artifact prepared by FileBasedDriver.
"""
from __future__ import annotations

import os
from stat import S_ISDIR
from typing import Optional, Tuple

import tensorflow as tf
from tfx.components.example_gen import driver, input_processor

from components.example_gen.ingestion.data_folder import is_remote

_NANOS_PER_SECOND = 10 ** 9


class ImageFolderDriver(driver.FileBasedDriver):
    def get_input_processor(self, splits, range_config=None, input_base_uri=None):
        assert input_base_uri
        return _FolderTreeInputProcessor(input_base_uri, splits, range_config)


class _FolderTreeInputProcessor(input_processor.FileBasedInputProcessor):
    def resolve_span_and_version(self) -> Tuple[int, Optional[int]]:
        self._fingerprint = tree_fingerprint(self._input_base_uri)
        return 0, None


def tree_fingerprint(data_root: str) -> str:
    """Like TFX's io_utils.generate_fingerprint, over every file and folder below data_root."""
    entries = total_bytes = xor_checksum = sum_checksum = 0
    for size, mtime_seconds in _sizes_and_mtimes(data_root):
        entries += 1
        total_bytes += size
        xor_checksum ^= mtime_seconds
        sum_checksum += mtime_seconds
    return (f'tree:{data_root},num_entries:{entries},total_bytes:{total_bytes},'
            f'xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}')


def _sizes_and_mtimes(data_root: str):
    if is_remote(data_root):
        for folder, _, files in tf.io.gfile.walk(data_root):
            for name in files:
                stat = tf.io.gfile.stat(os.path.join(folder, name))
                yield stat.length, stat.mtime_nsec // _NANOS_PER_SECOND
        return
    for folder, subfolders, files in os.walk(data_root):
        for name in subfolders + files:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # broken link or loop: the name still counts, ingestion reports it
                yield 0, 0
                continue
            yield (0 if S_ISDIR(stat.st_mode) else stat.st_size), int(stat.st_mtime)  # a folder's size is noise
