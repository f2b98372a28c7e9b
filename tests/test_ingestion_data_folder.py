"""data_root's files through tf.io.gfile, as on a distributed runner's storage (ram:// stands in for gs://)."""
import uuid

import tensorflow as tf

from components.example_gen.ingestion import data_folder, skips
from components.example_gen.ingestion.fingerprint import tree_fingerprint
from conftest import image_bytes


def write(path, data):
    tf.io.gfile.makedirs(path.rsplit('/', 1)[0])
    with tf.io.gfile.GFile(path, 'wb') as f:
        f.write(data)


def test_remote_folders_are_listed_walked_read_and_fingerprinted():
    root = f'ram://{uuid.uuid4().hex}/images'
    png = image_bytes((1, 2, 3))
    for path in ('cat/a.png', 'cat/nested/b.jpg', 'dog/c.png'):
        write(f'{root}/{path}', png)
    write(f'{root}/cat/.DS_Store', b'x')
    write(f'{root}/dog/notes.txt', b'x')
    write(f'{root}/labels.csv', b'x')

    assert data_folder.detect_layout(root) == data_folder.Layout(data_folder.CLASS_FOLDERS, {})
    found = data_folder.find_class_folders(root, [''])
    assert found.class_names == ['cat', 'dog']
    assert [(s.path, s.reason) for s in found.skipped] == [('labels.csv', skips.OUTSIDE_CLASS_FOLDER)]
    walked = {name: list(data_folder.walk(root, name)) for name in ('cat', 'dog')}
    assert sorted(item for item in walked['cat'] if isinstance(item, str)) == ['cat/a.png', 'cat/nested/b.jpg']
    assert [(s.path, s.reason) for s in walked['cat'] if isinstance(s, skips.Skip)] == [
        ('cat/.DS_Store', skips.HIDDEN_OR_SYSTEM)]
    assert [(s.path, s.reason) for s in walked['dog'] if isinstance(s, skips.Skip)] == [
        ('dog/notes.txt', skips.UNSUPPORTED_EXTENSION)]
    assert data_folder.read_bytes(root, 'cat/nested/b.jpg') == png

    before = tree_fingerprint(root)
    write(f'{root}/cat/nested/b.jpg', png + b'more')
    assert tree_fingerprint(root) != before
