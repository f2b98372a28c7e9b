"""The files under data_root: its layout, the class folders, a walk that cannot be fooled, reading.

Two layouts:

    class folders   data_root/<class>/**/<image>            splits computed from content hashes
    pre-split       data_root/<split>/<class>/**/<image>    split folders train, validation
                                                            (or val, eval) and test, used as given

A real folder holds more than images. Every entry that is not an image file to read becomes a
Skip with its reason instead of an exception: hidden and system files, names that are not
UTF-8, symbolic links that are broken, loop, or leave data_root (never followed), pipes and
devices, files outside any class folder, extensions of no image format. Symbolic links that
stay inside data_root are followed, each real folder at most once per class.

Local folders are read with `os` (symbolic links and raw file names are invisible to
tf.io.gfile); remote ones (`gs://...`) with tf.io.gfile, where neither exists.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import stat
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from components.example_gen.ingestion import IngestionError
from components.example_gen.ingestion import skips
from components.example_gen.ingestion.skips import Skip

logger = logging.getLogger(__name__)

CLASS_FOLDERS = 'class_folders'
PRE_SPLIT = 'pre_split'
OUTPUT_SPLITS = ('train', 'eval', 'test')
# Folder names of a pre-split layout (compared case-insensitively) -> the pipeline's split names.
SPLIT_FOLDER_NAMES = {'train': 'train', 'validation': 'eval', 'val': 'eval', 'eval': 'eval', 'test': 'test'}
# Files with these extensions are read; the content, not the extension, decides the format.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.gif', '.bmp', '.dib',
                    '.tif', '.tiff', '.webp', '.avif')
_SYSTEM_NAMES = {'thumbs.db', 'ehthumbs.db', 'desktop.ini', '__macosx', '@eadir', '$recycle.bin',
                 'system volume information'}


@dataclasses.dataclass(frozen=True)
class Layout:
    kind: str  # CLASS_FOLDERS or PRE_SPLIT
    split_folders: Dict[str, str]  # pre-split only: split name -> its folder under data_root


@dataclasses.dataclass(frozen=True)
class ClassFolders:
    """The class folders of one or more split folders ('' stands for data_root itself)."""

    class_names: List[str]  # sorted: a class's index is its label
    folders: Dict[str, List[Tuple[str, str]]]  # split folder -> [(class name, folder relative to data_root)]
    skipped: List[Skip]  # entries next to the class folders that are not class folders


@dataclasses.dataclass(frozen=True)
class _Entry:
    relative: str  # '/'-separated path relative to data_root
    name: str
    is_dir: bool
    identity: Optional[Tuple[int, int]] = None  # (device, inode) of a local folder


def is_remote(path: str) -> bool:
    return '://' in path


def is_hidden_or_system(name: str) -> bool:
    """`.DS_Store`, `._photo.jpg` (macOS resource forks), `Thumbs.db`, `__MACOSX/`, ..."""
    return name.startswith('.') or name.lower() in _SYSTEM_NAMES


def detect_layout(data_root: str, setting: str = 'auto') -> Layout:
    """Pre-split when every top-level folder is a split folder (auto), or when told so.

    Decided when the pipeline is built, so `layout: class_folders` does not look at data_root:
    a pipeline compiled for Kubeflow may name storage the compiling machine cannot read.
    """
    if setting == CLASS_FOLDERS:
        return Layout(CLASS_FOLDERS, {})
    if not tf.io.gfile.isdir(data_root):
        raise IngestionError(
            f'data_root {data_root} is not a folder that can be read here, and layout: {setting} needs to '
            f'look at its top-level folders when the pipeline is built; set layout: class_folders if '
            f'data_root holds one folder per class')
    folders = [entry.name for entry in _entries(data_root, '') if isinstance(entry, _Entry) and entry.is_dir]
    splits = {name: SPLIT_FOLDER_NAMES[name.lower()] for name in folders if name.lower() in SPLIT_FOLDER_NAMES}
    if setting == 'auto':
        looks_split = bool(folders) and len(splits) == len(folders) and 'train' in splits.values()
        if splits and not looks_split:
            logger.warning('data_root %s has folders named like splits (%s) next to others; reading every '
                           'top-level folder as a class (set layout: pre_split otherwise)',
                           data_root, ', '.join(sorted(splits)))
        setting = PRE_SPLIT if looks_split else CLASS_FOLDERS
    if setting == CLASS_FOLDERS:
        return Layout(CLASS_FOLDERS, {})
    by_split = collections.defaultdict(list)
    for folder, split in sorted(splits.items()):
        by_split[split].append(folder)
    missing = [split for split in OUTPUT_SPLITS if not by_split[split]]
    doubled = {split: names for split, names in by_split.items() if len(names) > 1}
    if missing or doubled:
        problems = [f'no folder for split {split}' for split in missing]
        problems += [f'several folders for split {split}: {", ".join(names)}' for split, names in doubled.items()]
        raise IngestionError(
            f'data_root {data_root} is read as pre-split folders but has {"; ".join(problems)}. '
            f'Expected exactly one each of train/, validation/ (or val/ or eval/) and test/, each with '
            f'one sub-folder per class; set layout: class_folders if the top-level folders are classes.')
    return Layout(PRE_SPLIT, {split: by_split[split][0] for split in OUTPUT_SPLITS})


def find_class_folders(data_root: str, split_folders: Sequence[str]) -> ClassFolders:
    """Lists the class folders in each split folder; only these few levels are read here."""
    skipped: List[Skip] = []
    folders: Dict[str, List[Tuple[str, str]]] = {}
    for split_folder in split_folders:
        folders[split_folder] = []
        for entry in _entries(data_root, split_folder):
            if isinstance(entry, Skip):
                skipped.append(entry)
            elif entry.is_dir:
                folders[split_folder].append((entry.name, entry.relative))
            else:
                skipped.append(Skip(entry.relative, skips.OUTSIDE_CLASS_FOLDER, 'not inside a class folder'))
    if list(split_folders) != ['']:
        expected = ', '.join(f'{name}/' for name in split_folders)
        for entry in _entries(data_root, ''):
            if isinstance(entry, Skip):
                skipped.append(entry)
            elif entry.name not in split_folders:
                skipped.append(Skip(entry.relative + ('/' if entry.is_dir else ''), skips.OUTSIDE_CLASS_FOLDER,
                                    f'not inside a split folder ({expected})'))
    names = sorted({name for per_split in folders.values() for name, _ in per_split})
    return ClassFolders(names, folders, skipped)


def walk(data_root: str, class_folder: str) -> Iterator[Union[str, Skip]]:
    """Every image file below a class folder (path relative to data_root), or why not.

    A stream: a folder's entries are yielded as they are read, nothing is collected.
    """
    pending = [class_folder]
    seen = set()
    while pending:
        folder = pending.pop()
        try:
            for entry in _entries(data_root, folder, seen):
                if isinstance(entry, Skip):
                    yield entry
                elif entry.is_dir:
                    pending.append(entry.relative)  # read after this folder: one open folder at a time
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    yield entry.relative
                else:
                    extension = os.path.splitext(entry.name)[1] or '(none)'
                    yield Skip(entry.relative, skips.UNSUPPORTED_EXTENSION,
                               f'extension {extension}; read are {" ".join(IMAGE_EXTENSIONS)}')
        except OSError as error:  # the folder itself cannot be listed
            yield Skip(folder + '/', skips.UNREADABLE, error.strerror or str(error))


def read_bytes(data_root: str, relative: str) -> bytes:
    path = _join(data_root, relative)
    if is_remote(data_root):
        with tf.io.gfile.GFile(path, 'rb') as f:
            return f.read()
    with open(path, 'rb') as f:
        return f.read()


def _join(data_root: str, relative: str) -> str:
    return data_root.rstrip('/') + '/' + relative if relative else data_root


def _entries(data_root: str, folder: str, seen: Optional[set] = None) -> Iterator[Union[_Entry, Skip]]:
    """The entries of one folder (relative to data_root), classified; `seen` guards against cycles."""
    if is_remote(data_root):
        yield from _remote_entries(data_root, folder)
        return
    path = _join(data_root, folder)
    if seen is not None:
        identity = _identity(os.stat(path))
        if identity in seen:
            yield Skip(folder + '/', skips.SYMLINK_LOOP, 'leads to a folder already read')
            return
        seen.add(identity)
    root = os.path.realpath(data_root)
    with os.scandir(path) as scan:
        for dir_entry in scan:
            yield _local_entry(dir_entry, folder, root)


def _local_entry(dir_entry: os.DirEntry, folder: str, root: str) -> Union[_Entry, Skip]:
    name = dir_entry.name
    try:
        name.encode('utf-8')
        shown = name
    except UnicodeEncodeError:  # os gives undecodable bytes as surrogates
        shown = os.fsencode(name).decode('utf-8', 'backslashreplace')
    relative = f'{folder}/{shown}' if folder else shown
    suffix = '/' if dir_entry.is_dir(follow_symlinks=False) else ''
    if shown != name:
        return Skip(relative + suffix, skips.NON_UTF8_NAME, 'names must be UTF-8')
    if is_hidden_or_system(name):
        return Skip(relative + suffix, skips.HIDDEN_OR_SYSTEM)
    if dir_entry.is_symlink():
        target = os.readlink(dir_entry.path)
        try:
            mode = os.stat(dir_entry.path).st_mode
        except FileNotFoundError:
            return Skip(relative, skips.BROKEN_SYMLINK, f'-> {target}')
        except OSError as error:
            if error.errno == errno.ELOOP:
                return Skip(relative, skips.SYMLINK_LOOP, f'-> {target}')
            return Skip(relative, skips.UNREADABLE, error.strerror or str(error))
        real = os.path.realpath(dir_entry.path)
        if os.path.commonpath([real, root]) != root:
            return Skip(relative, skips.SYMLINK_OUTSIDE_DATA_ROOT, f'-> {target}')
        is_dir, is_file = stat.S_ISDIR(mode), stat.S_ISREG(mode)
    else:
        is_dir, is_file = dir_entry.is_dir(follow_symlinks=False), dir_entry.is_file(follow_symlinks=False)
    if not (is_dir or is_file):
        return Skip(relative, skips.NOT_A_REGULAR_FILE)
    return _Entry(relative, name, is_dir)


def _remote_entries(data_root: str, folder: str) -> Iterator[Union[_Entry, Skip]]:
    path = _join(data_root, folder)
    for listed in tf.io.gfile.listdir(path):
        name = listed.rstrip('/')
        relative = f'{folder}/{name}' if folder else name
        is_dir = listed.endswith('/') or tf.io.gfile.isdir(_join(data_root, relative))
        if is_hidden_or_system(name):
            yield Skip(relative + ('/' if is_dir else ''), skips.HIDDEN_OR_SYSTEM)
        else:
            yield _Entry(relative, name, is_dir)


def _identity(stat_result: os.stat_result) -> Tuple[int, int]:
    return stat_result.st_dev, stat_result.st_ino
