"""Shared fixtures: tiny generated image folders and tiny pipeline configs."""
import io
import os
import struct
import zlib
from pathlib import Path

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
import pytest
from PIL import Image

# One colour per class, so a class is recognisable even with random backbone weights.
CLASS_COLOURS = {'cat': (200, 60, 40), 'dog': (40, 160, 60), 'fox': (50, 70, 210)}


def image_bytes(colour, size=(24, 20), fmt='PNG', mode='RGB', seed=0) -> bytes:
    """A small noisy image of one colour, encoded as fmt."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, 'RGB').convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels and has no pixel data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')


UPRIGHT_TOP, UPRIGHT_BOTTOM = (230, 20, 20), (20, 20, 230)


def sideways_photo() -> bytes:
    """A JPEG stored lying on its side with EXIF orientation 6, as phones write them.

    Upright (after applying the orientation) it is 20 wide and 30 high, red on top, blue below.
    """
    upright = np.zeros((30, 20, 3), np.uint8)
    upright[:15], upright[15:] = UPRIGHT_TOP, UPRIGHT_BOTTOM
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the sensor saw
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, format='JPEG', quality=95, exif=exif)
    return buffer.getvalue()


def make_image_folder(root: Path, per_class: int = 10, classes=CLASS_COLOURS) -> Path:
    """root/<class>/<n>.png|.jpg, alternating formats and grayscale/RGBA variants."""
    variants = [('PNG', 'RGB', 'png'), ('JPEG', 'RGB', 'jpg'), ('PNG', 'L', 'png'), ('PNG', 'RGBA', 'png')]
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fmt, mode, ext = variants[i % len(variants)]
            (root / name / f'{name}_{i:03d}.{ext}').write_bytes(image_bytes(colour, fmt=fmt, mode=mode, seed=i))
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / 'images')


def tiny_config_values(data_root: Path, output_dir: Path, **overrides) -> dict:
    """The smallest pipeline that still exercises every component."""
    values = dict(
        data_root=str(data_root), output_dir=str(output_dir), pipeline_name='tiny-test',
        image_size=32, alpha=0.35, weights='none', batch_size=8,
        head_epochs=1, fine_tune_epochs=1, fine_tune_at=140, min_accuracy=0.0,
    )
    values.update(overrides)
    return values


def backbone_spec(**overrides):
    """A tiny MobileNetV2 spec (alpha 0.35, 32 px, random weights) unless overridden."""
    from components.trainer.spec import BackboneSpec
    return BackboneSpec(**{'name': 'mobilenet_v2', 'image_size': 32, 'alpha': 0.35, 'weights': 'none',
                           **overrides})


def training_spec(backbones=None, **overrides):
    """A TrainingSpec as the Trainer trains with it: recipe tutorial unless overridden, resolved
    (recipe auto leaves the head's keys for recipe.choose_head unless they are given)."""
    from components.trainer import recipe
    from components.trainer.spec import TrainingSpec
    spec = TrainingSpec(backbones=backbones or [backbone_spec()],
                        **{'augmentation': False, 'recipe': 'tutorial', **overrides})
    return recipe.resolve(spec)


def transform_output(spec, tmp_path):
    """Transform's output (graph and raw schema) for spec's backbones, made with tft_beam as the
    Transform component makes it, for tests that export a model without running the pipeline."""
    import tempfile

    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from components.transform.image_preprocessing import preprocessing_fn
    raw_spec = {'image_raw': tf.io.FixedLenFeature([1], tf.string), 'label': tf.io.FixedLenFeature([1], tf.int64)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    config = {'inputs': [{'key': b.key, 'backbone': b.name, 'image_size': b.image_size} for b in spec.backbones]}
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        transform_fn = ([{'image_raw': [image_bytes((9, 9, 9))], 'label': [0]}], metadata) | \
            tft_beam.AnalyzeDataset(lambda inputs: preprocessing_fn(inputs, config))
    _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / 'transform'))
    # The raw schema, which TFX's Transform component also writes next to the graph.
    metadata_io.write_metadata(metadata, str(tmp_path / 'transform' / tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(str(tmp_path / 'transform'))


def kubeflow_config_values(**overrides) -> dict:
    """A tiny pipeline compiled for Kubeflow: storage on gs://, the Trainer on one GPU."""
    values = tiny_config_values(
        'gs://test-bucket/images', 'gs://test-bucket/out',
        container_image='registry.example/ml/image-transfer-learning:1.2.3', layout='class_folders',
        weights='imagenet-torchvision', alpha=1.0,
        beam_args=['--direct_running_mode=multi_processing', '--direct_num_workers=3'],
        component_resources={
            'Trainer': {'cpu_limit': 8, 'memory_limit': '32G', 'accelerator_type': 'nvidia.com/gpu',
                        'accelerator_count': 1},
            'Transform': {'cpu_limit': '500m', 'memory_limit': '4Gi'},
        })
    values.update(overrides)
    return values


@pytest.fixture(scope='session')
def kubeflow_spec_yaml(tmp_path_factory) -> Path:
    """The pipeline compiled once by `python -m kubeflow.runner` for the session's tests."""
    import yaml
    from kubeflow import runner
    folder = tmp_path_factory.mktemp('kubeflow')
    config_path = folder / 'config.yaml'
    config_path.write_text(yaml.safe_dump(kubeflow_config_values()))
    output = folder / 'spec.yaml'
    assert runner.main(['--config', str(config_path), '--output', str(output)]) == 0
    return output


def example_gen_exec_properties(data_root, ingestion) -> dict:
    """ImageExampleGen's exec_properties as its executor receives them, from the component itself."""
    from components.example_gen.component import ImageExampleGen
    component = ImageExampleGen(str(data_root), ingestion)
    return {key: value for key, value in component.exec_properties.items() if value is not None}
