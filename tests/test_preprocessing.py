"""Transform's preprocessing_fn, run through tft_beam as the Transform component runs it."""
import io
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components.transform.image_preprocessing import preprocessing_fn
from conftest import image_bytes

SIZE = 40
RAW_SPEC = {
    'image_raw': tf.io.FixedLenFeature([1], tf.string),
    'label': tf.io.FixedLenFeature([1], tf.int64),
    'filename': tf.io.FixedLenFeature([1], tf.string),
}


def transform(raw_examples, **options):
    """Transform's analyze-and-transform on raw examples; options: background, resize (as in custom_config)."""
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    custom_config = {'inputs': [{'key': 'image', 'backbone': 'mobilenet_v2', 'image_size': SIZE}],
                     'code_version': 'test', **options}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (transformed, _), transform_fn = (raw_examples, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, custom_config))
    return transformed, transform_fn


def test_decode_resize_and_scale_like_mobilenet_v2():
    colour = (250, 10, 128)
    inputs = [
        {'image_raw': [image_bytes(colour, fmt='PNG')], 'label': [0], 'filename': [b'a.png']},
        {'image_raw': [image_bytes(colour, fmt='JPEG')], 'label': [1], 'filename': [b'b.jpg']},
        {'image_raw': [image_bytes(colour, fmt='PNG', mode='L')], 'label': [2], 'filename': [b'c.png']},
        {'image_raw': [image_bytes(colour, fmt='PNG', mode='RGBA')], 'label': [0], 'filename': [b'd.png']},
        {'image_raw': [image_bytes(colour, fmt='GIF')], 'label': [1], 'filename': [b'e.gif']},
        {'image_raw': [image_bytes(colour, fmt='BMP')], 'label': [2], 'filename': [b'f.bmp']},
    ]
    transformed, _ = transform(inputs)
    assert [row['label'] for row in transformed] == [0, 1, 2, 0, 1, 2]
    for row, raw in zip(transformed, inputs, strict=True):
        image = np.asarray(row['image'])
        assert image.shape == (SIZE, SIZE, 3)
        assert image.min() >= -1.0 and image.max() <= 1.0
        # Same arithmetic as decode -> resize -> mobilenet_v2.preprocess_input.
        decoded = tf.io.decode_image(raw['image_raw'][0], channels=3, expand_animations=False)
        expected = tf.image.resize(decoded, [SIZE, SIZE], antialias=True).numpy() / 127.5 - 1
        np.testing.assert_allclose(image, expected, atol=1e-5)
    # Grayscale becomes three equal channels.
    gray = np.asarray(transformed[2]['image'])
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])
    # The colour survives: red channel high, green low (JPEG is lossy, so with a margin).
    rgb = np.asarray(transformed[1]['image']).mean(axis=(0, 1))
    assert rgb[0] > 0.7 and rgb[1] < -0.7


def test_transform_graph_serves_raw_bytes_without_label(tmp_path):
    """At serving time only image_raw is fed; the label output is dropped, not required."""
    _, transform_fn = transform([{'image_raw': [image_bytes((1, 2, 3))], 'label': [0], 'filename': [b'x']}])
    _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path))
    layer = tft.TFTransformOutput(str(tmp_path)).transform_features_layer()
    outputs = layer({'image_raw': tf.constant([[image_bytes((1, 2, 3), fmt='JPEG')]])})
    assert outputs['image'].shape == (1, SIZE, SIZE, 3)
    assert 'label' not in outputs
    with pytest.raises(tf.errors.InvalidArgumentError, match='Unknown image file format'):
        layer({'image_raw': tf.constant([[b'not an image']])})


def test_one_tensor_per_backbone_each_with_its_own_size_and_scaling():
    config = {'inputs': [{'key': 'image_0_vgg16', 'backbone': 'vgg16', 'image_size': 24},
                         {'key': 'image_1_inception_v3', 'backbone': 'inception_v3', 'image_size': 75}]}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    raw = [{'image_raw': [image_bytes((250, 10, 128))], 'label': [1], 'filename': [b'a.png']}]
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (transformed, _), _ = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config))
    [row] = transformed
    assert set(row) == {'label', 'image_0_vgg16', 'image_1_inception_v3'}
    vgg, inception = np.asarray(row['image_0_vgg16']), np.asarray(row['image_1_inception_v3'])
    assert vgg.shape == (24, 24, 3) and inception.shape == (75, 75, 3)
    assert vgg[..., 2].mean() > 100  # caffe: BGR order, mean subtracted, red ~250 - 124
    assert -1 <= inception.min() and inception.max() <= 1 and inception[..., 0].mean() > 0.9


def transparent_photo() -> Image.Image:
    """24x20, noisy colours and alpha from 0 to 255; a block fully transparent over pure red."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    pixels[4:12, 3:15] = (255, 0, 0, 0)
    return Image.fromarray(pixels, 'RGBA')


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def flattened(image: Image.Image, background) -> bytes:
    """The image as a viewer shows it, made beforehand: composited onto the background, opaque PNG."""
    canvas = Image.new('RGBA', image.size, tuple(background) + (255,))
    return png(Image.alpha_composite(canvas, image).convert('RGB'))


@pytest.mark.parametrize('background,resize', [((255, 255, 255), None), ((0, 0, 0), 'pad'), ((10, 120, 230), 'crop')])
def test_transparent_png_transforms_as_the_same_image_flattened_beforehand(tmp_path, background, resize):
    """Training (Transform through Beam) and serving (its graph as a layer) composite alike."""
    options = {'background': list(background)} if background != (255, 255, 255) else {}  # white: the default
    options.update({'resize': resize} if resize else {})
    image = transparent_photo()
    alpha = np.asarray(image)[..., 3]
    assert (alpha == 0).sum() >= 96 and ((alpha > 0) & (alpha < 255)).sum() > 100  # dropping alpha would show
    raw = [{'image_raw': [png(image)], 'label': [0], 'filename': [b'transparent.png']},
           {'image_raw': [flattened(image, background)], 'label': [0], 'filename': [b'flat.png']}]
    transformed, transform_fn = transform(raw, **options)
    transparent, flat = (np.asarray(row['image']) for row in transformed)
    # Pillow rounds its composite to whole levels: at most one level apart, 2/255 after [-1, 1] scaling.
    np.testing.assert_allclose(transparent, flat, atol=2 / 255)
    _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path))
    served = tft.TFTransformOutput(str(tmp_path)).transform_features_layer()(
        {'image_raw': tf.constant([[png(image)]])})['image'].numpy()[0]
    np.testing.assert_allclose(served, transparent, atol=1e-5)

