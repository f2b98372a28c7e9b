"""ImageExampleGen's executor on a temporary folder: examples, labels, splits, skips, errors."""
import glob
import json

import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import class_names
from components.image_example_gen import (REPORT_FILE, Executor, IngestionError, list_class_names,
                                          output_config)
from conftest import CLASS_COLOURS, image_bytes, make_image_folder


def run_executor(data_root, out_dir, ratios=(8, 1, 1)):
    examples = standard_artifacts.Examples()
    examples.uri = str(out_dir)
    exec_properties = {
        'input_base': str(data_root),
        'input_config': proto_utils.proto_to_json(example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name='images', pattern='*/*')])),
        'output_config': proto_utils.proto_to_json(output_config(*ratios)),
        'output_data_format': example_gen_pb2.FORMAT_TF_EXAMPLE,
    }
    Executor().Do({}, {'examples': [examples]}, exec_properties)
    return examples


def read_split(uri, split):
    records = tf.data.TFRecordDataset(glob.glob(f'{uri}/Split-{split}/*'), compression_type='GZIP')
    examples = [tf.train.Example.FromString(r.numpy()) for r in records]
    return {e.features.feature['filename'].bytes_list.value[0].decode():
            (e.features.feature['label'].int64_list.value[0], e.features.feature['image_raw'].bytes_list.value[0])
            for e in examples}


def read_all(uri):
    return {split: read_split(uri, split) for split in ('train', 'eval', 'test')}


def test_examples_labels_and_report(tmp_path, image_folder):
    (image_folder / 'cat' / 'nested').mkdir()
    (image_folder / 'cat' / 'nested' / 'deep.png').write_bytes(image_bytes(CLASS_COLOURS['cat']))
    (image_folder / 'cat' / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
    (image_folder / 'dog' / 'notes.txt').write_text('not an image')
    (image_folder / 'fox' / 'broken.jpg').write_bytes(b'this is not a jpeg')
    (image_folder / 'fox' / 'empty.png').write_bytes(b'')
    (image_folder / 'fox' / 'truncated.png').write_bytes(image_bytes(CLASS_COLOURS['fox'])[:40])

    artifact = run_executor(image_folder, tmp_path / 'out')

    splits = read_all(artifact.uri)
    everything = {name: value for split in splits.values() for name, value in split.items()}
    assert len(everything) == 31  # 3 x 10 + the nested file
    assert 'cat/nested/deep.png' in everything
    for name, (label, data) in everything.items():
        assert ['cat', 'dog', 'fox'][label] == name.split('/')[0]
        assert data == (image_folder / name).read_bytes()  # bytes untouched
    assert all(len(split) > 0 for split in splits.values())

    assert class_names.read(artifact.uri) == ['cat', 'dog', 'fox']
    assert json.loads(artifact.get_string_custom_property('class_names')) == ['cat', 'dog', 'fox']
    report = json.loads((tmp_path / 'out' / REPORT_FILE).read_text())
    assert report['total'] == 31
    assert sum(report['counts'][s]['cat'] for s in ('train', 'eval', 'test')) == 11
    reasons = {item['file']: item['reason'] for item in report['skipped']}
    assert set(reasons) == {'cat/.DS_Store', 'dog/notes.txt', 'fox/broken.jpg', 'fox/empty.png',
                            'fox/truncated.png'}
    assert reasons['fox/empty.png'] == 'empty file'
    assert reasons['fox/broken.jpg'].startswith('not decodable by TensorFlow: Unknown image file format')
    assert reasons['dog/notes.txt'].startswith('unsupported file type .txt')
    assert reasons['cat/.DS_Store'] == 'hidden or system file'
    assert artifact.get_int_custom_property('num_skipped') == 5


def test_splits_are_stable_when_images_are_added(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=12)
    before = read_all(run_executor(folder, tmp_path / 'first').uri)
    for name, colour in CLASS_COLOURS.items():
        for i in range(12, 30):
            (folder / name / f'{name}_{i:03d}.png').write_bytes(image_bytes(colour, seed=i))
    after = read_all(run_executor(folder, tmp_path / 'second').uri)
    for split in before:
        assert set(before[split]) <= set(after[split]), f'files moved out of {split}'
    sizes = {split: len(files) for split, files in after.items()}
    assert sizes['train'] > sizes['eval'] and sizes['train'] > sizes['test']


def test_split_ratios_are_respected(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=40)
    splits = read_all(run_executor(folder, tmp_path / 'out', ratios=(1, 1, 2)).uri)
    sizes = {split: len(files) for split, files in splits.items()}
    assert sum(sizes.values()) == 120
    assert 40 <= sizes['test'] <= 80 and sizes['train'] < sizes['test']


def test_single_class_is_an_error(tmp_path):
    make_image_folder(tmp_path / 'images', classes={'cat': (1, 2, 3)})
    with pytest.raises(IngestionError, match=r"at least two\), found 1: \['cat'\]"):
        list_class_names(str(tmp_path / 'images'))


def test_empty_class_folder_is_named(tmp_path, image_folder):
    (image_folder / 'zebra').mkdir()
    (image_folder / 'zebra' / '.DS_Store').write_bytes(b'x')
    with pytest.raises(IngestionError, match='class folder\\(s\\) with no files in .*: zebra'):
        list_class_names(str(image_folder))


def test_class_without_a_decodable_image_is_named(tmp_path, image_folder):
    (image_folder / 'zebra').mkdir()
    for i in range(3):
        (image_folder / 'zebra' / f'bad{i}.jpg').write_bytes(b'garbage')
    with pytest.raises(IngestionError, match='class\\(es\\) without a single usable image: zebra'):
        run_executor(image_folder, tmp_path / 'out')
