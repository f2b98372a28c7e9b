"""The gate's baseline: the model served now, found in serving_dir without ML Metadata."""
import os

import pytest
from tfx.types import standard_artifacts, standard_component_specs

from components.evaluator import baseline


def _version(serving_dir, name, complete=True):
    folder = serving_dir / name
    (folder / 'variables').mkdir(parents=True)
    (folder / 'variables' / 'variables.index').write_bytes(b'weights of ' + name.encode())
    if complete:
        (folder / 'saved_model.pb').write_bytes(b'graph of ' + name.encode())


def test_latest_complete_version_wins(tmp_path):
    serving = tmp_path / 'serving'
    assert baseline.latest_served_version(str(serving)) is None  # no folder yet: the first run
    serving.mkdir()
    assert baseline.latest_served_version(str(serving)) is None
    _version(serving, '20')
    _version(serving, '100')
    _version(serving, '300', complete=False)  # a push still being written, or a broken one
    (serving / 'notes').mkdir()
    assert baseline.latest_served_version(str(serving)) == '100'  # by number, not by name


def _model_artifact(uri):
    model = standard_artifacts.Model()
    model.uri = str(uri)
    return model


def test_the_served_model_becomes_the_baseline_artifact(tmp_path):
    serving = tmp_path / 'serving'
    _version(serving, '7')
    out = _model_artifact(tmp_path / 'baseline')
    baseline.ServedModelBaseline.test_call(serving_dir=str(serving), baseline=out)
    assert out.get_string_custom_property(baseline.SERVED_VERSION_PROPERTY) == '7'
    copied = tmp_path / 'baseline' / 'Format-Serving'
    assert (copied / 'saved_model.pb').read_bytes() == b'graph of 7'
    assert (copied / 'variables' / 'variables.index').read_bytes() == b'weights of 7'
    assert baseline.has_model(out)


def test_no_served_model_gives_an_empty_baseline(tmp_path):
    out = _model_artifact(tmp_path / 'baseline')
    baseline.ServedModelBaseline.test_call(serving_dir=str(tmp_path / 'nothing'), baseline=out)
    assert out.get_string_custom_property(baseline.SERVED_VERSION_PROPERTY) == ''
    assert not baseline.has_model(out)


@pytest.mark.parametrize('served', [True, False])
def test_the_evaluator_gets_a_baseline_only_when_one_is_served(tmp_path, monkeypatch, served):
    received = {}
    monkeypatch.setattr(baseline.evaluator_executor.Executor, 'Do',
                        lambda self, inputs, outputs, props: received.update(inputs))
    model = _model_artifact(tmp_path / 'baseline')
    if served:
        os.makedirs(tmp_path / 'baseline' / 'Format-Serving')
        (tmp_path / 'baseline' / 'Format-Serving' / 'saved_model.pb').write_bytes(b'x')
    key = standard_component_specs.BASELINE_MODEL_KEY
    baseline.Executor().Do({'model': [_model_artifact(tmp_path / 'new')], key: [model]}, {}, {})
    assert (key in received) is served
    assert len(received['model']) == 1
