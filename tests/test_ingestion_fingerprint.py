"""ImageExampleGen's driver: an input fingerprint (TFX's cache key) of every file in the tree."""
import os

from components.example_gen.component import ImageExampleGen
from components.example_gen.ingestion.fingerprint import ImageFolderDriver, tree_fingerprint
from conftest import image_bytes
from components.example_gen.spec import IngestionConfig


def test_changes_deep_in_the_tree_change_the_fingerprint(tmp_path, image_folder):
    deep = image_folder / 'cat' / 'a' / 'b'
    deep.mkdir(parents=True)
    (deep / 'x.png').write_bytes(image_bytes((1, 2, 3)))
    first = tree_fingerprint(str(image_folder))
    assert tree_fingerprint(str(image_folder)) == first
    (deep / 'x.png').write_bytes(image_bytes((1, 2, 3), size=(30, 30)))  # replaced, two levels down
    replaced = tree_fingerprint(str(image_folder))
    assert replaced != first
    (deep / 'y.png').write_bytes(image_bytes((1, 2, 3)))
    assert tree_fingerprint(str(image_folder)) != replaced


def test_driver_fingerprints_folders_tfx_cannot(tmp_path, image_folder):
    # TFX's own fingerprint globs `*/*` with tf.io.gfile and raises UnicodeDecodeError here.
    with open(os.fsencode(image_folder / 'cat') + b'/caf\xe9.jpg', 'wb') as f:
        f.write(b'x')
    os.symlink('loop', image_folder / 'dog' / 'loop')
    component = ImageExampleGen(str(image_folder), IngestionConfig())
    assert component.driver_class is ImageFolderDriver
    exec_properties = {key: component.exec_properties[key] for key in ('input_base', 'input_config')}
    exec_properties['input_config'] = '{"splits": [{"name": "images", "pattern": "*/*"}]}'
    resolved = ImageFolderDriver(None).resolve_exec_properties(exec_properties, None, None)
    assert resolved['input_fingerprint'] == tree_fingerprint(str(image_folder))
    assert resolved['span'] == 0 and resolved['version'] is None
