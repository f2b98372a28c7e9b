"""Why a file was not ingested: the reason codes of the ingestion report.

Every file or folder under data_root that does not become an example is recorded as a Skip
with one of these codes and a detail (the library's own message where there is one), so a
user can grep the report for a code and tests can assert the reason, not a wording.
"""
from __future__ import annotations

import dataclasses
from typing import Dict

HIDDEN_OR_SYSTEM = 'hidden_or_system'
NON_UTF8_NAME = 'non_utf8_name'
BROKEN_SYMLINK = 'broken_symlink'
SYMLINK_LOOP = 'symlink_loop'
SYMLINK_OUTSIDE_DATA_ROOT = 'symlink_outside_data_root'
NOT_A_REGULAR_FILE = 'not_a_regular_file'
OUTSIDE_CLASS_FOLDER = 'outside_class_folder'
UNSUPPORTED_EXTENSION = 'unsupported_extension'
UNREADABLE = 'unreadable'
EMPTY_FILE = 'empty_file'
NOT_AN_IMAGE = 'not_an_image'
TOO_MANY_PIXELS = 'too_many_pixels'
CORRUPT_IMAGE = 'corrupt_image'

EXPLANATIONS: Dict[str, str] = {
    HIDDEN_OR_SYSTEM: 'hidden or system file or folder (.*, Thumbs.db, __MACOSX, ...)',
    NON_UTF8_NAME: 'name is not valid UTF-8 (shown with \\x escapes)',
    BROKEN_SYMLINK: 'symbolic link to nothing',
    SYMLINK_LOOP: 'symbolic link that loops, or leads back into a folder already being read',
    SYMLINK_OUTSIDE_DATA_ROOT: 'symbolic link leaving data_root (not followed)',
    NOT_A_REGULAR_FILE: 'device, pipe or socket',
    OUTSIDE_CLASS_FOLDER: 'not inside a class folder (or, with split folders, not inside a split folder)',
    UNSUPPORTED_EXTENSION: 'file extension of no image format that is read',
    UNREADABLE: 'the file system refused to read it',
    EMPTY_FILE: 'zero bytes',
    NOT_AN_IMAGE: 'content is not an image (whatever its extension says)',
    TOO_MANY_PIXELS: 'more pixels than max_image_pixels, judged from the header without decoding',
    CORRUPT_IMAGE: 'truncated or corrupt image data',
}


@dataclasses.dataclass(frozen=True)
class Skip:
    """A file (or a whole folder, whose path ends with '/') that was not ingested."""

    path: str  # relative to data_root, '/'-separated
    reason: str  # one of the codes above
    detail: str = ''

    def to_json(self) -> Dict[str, str]:
        return {'file': self.path, 'reason': self.reason, 'detail': self.detail}
