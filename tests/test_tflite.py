"""TFLite variants: conversion, what the files really hold, the accuracy gate, and predict.

A tiny MobileNetV2 (alpha 0.35, 32 px, random weights) is trained briefly on solid colours so
that it has real, confident predictions; it is exported as the Trainer exports, and its
variants are measured on a test split written as ImageExampleGen writes it.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.features import IMAGE_KEY, LABEL_KEY
from components.tflite import export, variants
from components.tflite.interpreter import TFLiteModel
from components.tflite.spec import TFLiteSpec
from components.trainer import model as model_lib
from components.trainer import serving
from conftest import backbone_spec, image_bytes, training_spec, transform_output
from pipeline import predict

COLOURS = {'blue': (20, 40, 220), 'green': (30, 200, 40), 'red': (220, 30, 30)}


def _write_split(examples_uri, split, images):
    folder = examples_uri / f'Split-{split}'
    folder.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(folder / 'data.gz'), options='GZIP') as writer:
        for encoded, label in images:
            example = tf.train.Example(features=tf.train.Features(feature={
                IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
            writer.write(example.SerializeToString())


def _images(count, seed):
    return [(image_bytes(colour, size=(40, 32), seed=seed + i), label)
            for label, colour in enumerate(COLOURS.values()) for i in range(count)]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('tflite')
    spec = training_spec([backbone_spec()])
    tf_keras.utils.set_random_seed(0)
    train = _images(8, seed=0)
    pixels = np.stack([tf.image.resize(tf.io.decode_png(e, channels=3), [32, 32]).numpy() for e, _ in train])
    bases = model_lib.build_bases(spec)
    stats = model_lib.feature_statistics(model_lib.build_feature_extractor(spec, bases), {'image': pixels / 127.5 - 1})
    classifier = model_lib.build_classifier(spec, len(COLOURS), bases=bases, feature_stats=stats)
    classifier.model.compile(tf_keras.optimizers.Adam(1e-2),
                             tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.model.fit({'image': pixels / 127.5 - 1.0}, np.array([label for _, label in train]), epochs=15,
                         verbose=0)
    saved_model = root / 'model'
    serving.export(classifier.model, transform_output(spec, root), list(COLOURS), str(saved_model), spec.backbones)
    examples = root / 'examples'
    _write_split(examples, 'train', train)
    _write_split(examples, 'test', _images(5, seed=100))
    return dict(root=root, saved_model=saved_model, examples=examples)


def _served_accuracy(exported):
    served = tf.saved_model.load(str(exported['saved_model'])).signatures['serving_default']
    images = _images(5, seed=100)
    classes = served(image_bytes=tf.constant([e for e, _ in images]))['class_id'].numpy()
    return float(np.mean(classes == [label for _, label in images]))


@pytest.mark.parametrize('variant', variants.VARIANTS)
def test_every_variant_converts_and_holds_what_it_promises(exported, variant):
    model = variants.convert(str(exported['saved_model']), serving.PIXELS_SIGNATURE, variant, lambda: iter(
        [[np.zeros((1, 32, 32, 3), np.float32)], [np.full((1, 32, 32, 3), 255.0, np.float32)]]))
    types = variants.tensor_types(model)
    assert variants.check_types(variant, types) is None, types
    if variant == 'int8':
        assert types['input'] == 'uint8' and types['output'] == 'uint8'
        assert not [name for name in types['tensors'] if name.startswith('float')], types
        assert types['tensors'].get('int8'), types  # the weights
        # Calibrated on black and white: camera pixels go in unchanged.
        assert TFLiteModel(model_content=model).input_quantization == (1.0, 0)
    else:
        assert types['input'] == 'float32' and types['output'] == 'float32'
    probabilities = TFLiteModel(model_content=model).probabilities(np.full((2, 32, 32, 3), 128.0))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)


def test_a_float_model_is_not_taken_for_int8(exported):
    float_model = variants.convert(str(exported['saved_model']), serving.PIXELS_SIGNATURE, 'float32')
    problem = variants.check_types('int8', variants.tensor_types(float_model))
    assert problem and 'not full-integer' in problem


def test_variants_within_budget_are_written_beside_the_savedmodel(exported, tmp_path):
    target = tmp_path / 'model'
    _copy(exported['saved_model'], target)
    spec = TFLiteSpec(variants=list(variants.VARIANTS), max_accuracy_drop=1.0)
    report = export.export_variants(str(target), str(exported['examples']), spec, str(tmp_path / 'rejected'))
    assert report['pushed'] == list(variants.VARIANTS)
    assert report['test_images'] == 15
    # The SavedModel's accuracy on the decoded pixels is its accuracy on the raw bytes.
    assert report['savedmodel']['accuracy'] == pytest.approx(_served_accuracy(exported))
    assert report['savedmodel']['accuracy'] >= 0.8  # the colours were learnt: top classes mean something
    for variant in variants.VARIANTS:
        result = report['variants'][variant]
        assert (target / 'tflite' / f'{variant}.tflite').stat().st_size == result['size_bytes']
        assert result['latency_ms'] > 0 and set(result['per_class_recall']) == {0, 1, 2}
    sizes = {v: report['variants'][v]['size_bytes'] for v in variants.VARIANTS}
    assert sizes['float16'] < sizes['float32'] and sizes['int8'] < sizes['float16']
    assert (target / 'tflite' / 'labels.txt').read_text().split() == list(COLOURS)
    info = json.loads((target / 'tflite' / 'model_info.json').read_text())
    assert info['image_size'] == 32 and info['resize'] == 'squash' and info['background'] == [255, 255, 255]
    assert info['variants']['int8']['input'] == {'dtype': 'uint8', 'shape': [1, 32, 32, 3], 'scale': 1.0,
                                                 'zero_point': 0}
    assert not (tmp_path / 'rejected').exists()


def test_a_variant_over_budget_is_reported_and_not_written_beside_the_savedmodel(exported, tmp_path):
    target = tmp_path / 'model'
    _copy(exported['saved_model'], target)
    spec = TFLiteSpec(variants=['float32', 'int8'], max_accuracy_drop=-1)
    report = export.export_variants(str(target), str(exported['examples']), spec, str(tmp_path / 'rejected'))
    assert report['pushed'] == []
    for variant in ('float32', 'int8'):
        result = report['variants'][variant]
        assert result['pushed'] is False and 'more than max_tflite_accuracy_drop -1' in result['reason']
        assert (tmp_path / 'rejected' / f'{variant}.tflite').exists()
    assert not (target / 'tflite').exists()


def test_predict_gives_the_same_top_class_from_tflite_and_savedmodel(exported, tmp_path, capsys):
    target = tmp_path / 'model'
    _copy(exported['saved_model'], target)
    spec = TFLiteSpec(variants=['float32', 'int8'], max_accuracy_drop=1.0)
    export.export_variants(str(target), str(exported['examples']), spec, str(tmp_path / 'rejected'))
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name, colour in COLOURS.items():
        (photos / f'{name}.jpg').write_bytes(image_bytes(colour, size=(50, 30), fmt='JPEG', seed=7))
        (photos / f'{name}.png').write_bytes(image_bytes(colour, size=(20, 20), mode='RGBA', seed=8))
    answers = {}
    for model in (target, target / 'tflite' / 'float32.tflite', target / 'tflite' / 'int8.tflite'):
        assert predict.main(['--model', str(model), '--json', str(photos)]) == 0
        out = json.loads(capsys.readouterr().out)
        answers[model.name] = {os.path.basename(p['file']): p['top'][0]['class'] for p in out['predictions']}
    right = sum(answers['model'][f'{n}.{e}'] == n for n in COLOURS for e in ('jpg', 'png'))
    assert right >= 4, answers['model']
    assert answers['float32.tflite'] == answers['model']
    # This random-weight backbone's activations are ~1e-12 before the head's standardisation
    # (model.feature_statistics): int8 cannot represent them, so only its plumbing is checked
    # here; bench/tflite_variants.py measures int8 on a pretrained model and real images.
    assert set(answers['int8.tflite'].values()) <= set(COLOURS)


def test_predict_explains_a_tflite_file_without_its_model_info(exported, tmp_path, capsys):
    lonely = tmp_path / 'lonely.tflite'
    lonely.write_bytes(variants.convert(str(exported['saved_model']), serving.PIXELS_SIGNATURE, 'float32'))
    (tmp_path / 'a.png').write_bytes(image_bytes((1, 2, 3)))
    assert predict.main(['--model', str(lonely), str(tmp_path / 'a.png')]) == 2
    assert 'model_info.json is missing' in capsys.readouterr().err


def test_unknown_or_repeated_variants_are_config_errors():
    with pytest.raises(ValueError, match='int4'):
        TFLiteSpec(variants=['int4'])
    with pytest.raises(ValueError, match='int8 listed more than once'):
        TFLiteSpec(variants=['int8', 'int8'])


def _copy(source, target):
    from tfx.utils import io_utils
    io_utils.copy_dir(str(source), str(target))
