"""The Tuner (components/tuner): TFX's own Tuner executor running `tuner_fn` on a real Transform output.

The data comes from the pipeline's own ImageExampleGen, ImportSchemaGen and Transform, run once
by LocalDagRunner on tiny generated images; each test then runs TFX's Tuner executor with the
custom_config create_pipeline gives the Tuner, and reads what TFX wrote.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tf_keras
import yaml
from tfx import v1 as tfx
from tfx.components.tuner import executor as tuner_executor
from tfx.dsl.components.base import base_executor
from tfx.proto.orchestration import pipeline_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.report.component import tuning_trials
from components.trainer import reports
from components.trainer.spec import TrainingSpec
from components.tuner.spec import FINE_TUNE_HYPERPARAMETERS, HEAD_HYPERPARAMETERS, TuningSpec
from conftest import make_image_folder, tiny_config_values
from pipeline import tfx_pipeline
from pipeline.config import ConfigError, PipelineConfig, load_config

# The Trainer's side of the contract (components/trainer/hyperparameters.py): these names only.
TRAINER_TAKES = {'learning_rate': float, 'dropout': float, 'head_l2': float, 'hidden_units': int, 'head': str,
                 'fine_tune_at': float, 'fine_tune_learning_rate': float}


def _config(root: Path, **tuning) -> PipelineConfig:
    return PipelineConfig(**tiny_config_values(root / 'images', root / 'out',
                                               split_ratios={'train': 60, 'eval': 20, 'test': 20},
                                               tuning=tuning))


@pytest.fixture(scope='module')
def upstream(tmp_path_factory):
    """ImageExampleGen, ImportSchemaGen and Transform's artifacts, produced by the pipeline's components."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    root = tmp_path_factory.mktemp('tuner')
    make_image_folder(root / 'images', per_class=12)
    config = _config(root)
    # The whole pipeline, run up to Transform (TFX's partial run).
    options = pipeline_pb2.RunOptions()
    options.partial_run.to_nodes.append('Transform')
    options.partial_run.snapshot_settings.latest_pipeline_run_strategy.SetInParent()
    tfx.orchestration.LocalDagRunner().run_with_ir(tfx_pipeline.local_ir(tfx_pipeline.create_pipeline(config)),
                                                   run_options=options)
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(config.metadata_path))

    def artifact(type_name):
        [found] = store.get_artifacts_by_type(type_name)
        return artifact_utils.deserialize_artifact(store.get_artifact_type(type_name), found)

    return dict(root=root, examples=artifact('Examples'), schema=artifact('Schema'),
                transform_graph=artifact('TransformGraph'))


def _exec_properties(config: PipelineConfig) -> dict:
    """The exec_properties of the Tuner component create_pipeline builds for this config."""
    [tuner] = [c for c in tfx_pipeline.create_pipeline(config).components if c.id == 'Tuner']
    return {key: proto_utils.proto_to_json(value) if hasattr(value, 'DESCRIPTOR') else value
            for key, value in tuner.exec_properties.items() if value is not None}


def _run_tuner(upstream, tmp_path, **tuning):
    """TFX's Tuner executor with the Tuner component create_pipeline builds for this tuning config."""
    config = _config(upstream['root'], **tuning)
    exec_properties = _exec_properties(config)
    outputs = {'best_hyperparameters': standard_artifacts.HyperParameters(),
               'tuner_results': standard_artifacts.TunerResults()}
    for key, artifact in outputs.items():
        artifact.uri = str(tmp_path / key)
    inputs = {key: [upstream[key]] for key in ('examples', 'schema', 'transform_graph')}
    context = base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / 'tmp'), unique_id='1')
    tuner_executor.Executor(context).Do(inputs, {k: [v] for k, v in outputs.items()}, exec_properties)
    best = json.loads((tmp_path / 'best_hyperparameters' / 'best_hyperparameters.txt').read_text())
    rows = json.loads((tmp_path / 'tuner_results' / 'tuner_results.json').read_text())
    return config, best, rows


def _assert_trainer_takes(config: PipelineConfig, values: dict):
    assert set(values) <= set(TRAINER_TAKES), values
    for name, value in values.items():
        assert isinstance(value, TRAINER_TAKES[name]) and not isinstance(value, bool), (name, value)
    assert 0 <= values.get('dropout', 0) < 1 and values.get('head_l2', 0) >= 0 and values.get('hidden_units', 0) >= 0
    assert values.get('head', 'gap') in ('gap', 'max', 'flatten')
    assert 0 < values.get('fine_tune_at', 0.5) < 1
    # The Trainer's own code accepts them (its check of the names, then the values applied to its spec).
    from components.trainer import hyperparameters
    spec = hyperparameters.apply(config.training(), hyperparameters.values_of({'values': values}))
    assert isinstance(spec, TrainingSpec)
    if 'fine_tune_at' in values:
        assert {b.fine_tune_at for b in spec.backbones} == {values['fine_tune_at']}


def test_head_trials_write_the_best_values_the_trainer_takes(upstream, tmp_path):
    config, best, rows = _run_tuner(upstream, tmp_path, head_trials=3, max_head_epochs=3, search='random')
    values = best['values']
    # Every head hyper-parameter is searched by default (MobileNetV2 outputs a feature map:
    # head too); nothing else, and no stage.
    assert set(values) == set(HEAD_HYPERPARAMETERS)
    _assert_trainer_takes(config, values)
    assert 1e-4 <= values['learning_rate'] <= 3e-2 and 0 <= values['dropout'] <= 0.5
    assert values['head'] in ('gap', 'max') and values['hidden_units'] in (0, 128, 512)
    # tuner_results: one row per trial, all head trials, the best first and equal to best_hyperparameters.
    assert len(rows) == 3 and {row['stage'] for row in rows} == {'head'}
    assert all(math.isfinite(row['score']) for row in rows)
    assert rows[0]['score'] == min(row['score'] for row in rows)
    assert {k: v for k, v in rows[0].items() if k not in ('trial_id', 'score', 'stage')} == values
    assert len({json.dumps({k: v for k, v in row.items() if k not in ('trial_id', 'score')}, sort_keys=True)
                for row in rows}) == 3  # three different trials


def test_fine_tune_trials_run_with_the_best_head_values_fixed(upstream, tmp_path):
    config, best, rows = _run_tuner(upstream, tmp_path, head_trials=2, max_head_epochs=2, fine_tune_trials=2,
                                    fine_tune_trial_epochs=1, dropout=None, head=None)
    values = best['values']
    assert set(values) == {'learning_rate', 'head_l2', 'hidden_units'} | set(FINE_TUNE_HYPERPARAMETERS)
    _assert_trainer_takes(config, values)
    assert 0.5 <= values['fine_tune_at'] <= 0.9 and 1e-6 <= values['fine_tune_learning_rate'] <= 1e-3
    head = [row for row in rows if row['stage'] == 'head']
    fine_tune = [row for row in rows if row['stage'] == 'fine_tune']
    assert len(head) == 2 and len(fine_tune) == 2
    best_head = min(head, key=lambda row: row['score'])
    for row in fine_tune:  # the best head values, fixed
        assert {k: row[k] for k in ('learning_rate', 'head_l2', 'hidden_units')} == \
            {k: best_head[k] for k in ('learning_rate', 'head_l2', 'hidden_units')}
    assert fine_tune[0]['fine_tune_at'] != fine_tune[1]['fine_tune_at']
    # The chosen trial is the best fine-tuning trial, whatever the head trials scored.
    chosen = min(fine_tune, key=lambda row: row['score'])
    assert rows[0] == chosen
    assert values == {k: v for k, v in chosen.items() if k not in ('trial_id', 'score', 'stage')}

    # The report marks it and lists every trial by stage.
    tuning = tuning_trials(rows)
    assert tuning['chosen_trial'] == chosen['trial_id'] and tuning['chosen_values'] == values
    assert [t['stage'] for t in tuning['trials']] == ['head', 'head', 'fine_tune', 'fine_tune']
    assert [t['chosen'] for t in tuning['trials']].count(True) == 1
    markdown = '\n'.join(reports.tuning_markdown(tuning))
    assert f'**{chosen["trial_id"]} chosen**' in markdown and 'fine_tune_learning_rate' in markdown


def test_the_same_values_train_the_same_head(upstream, tmp_path):
    """What lets a fine-tuning trial start from the best head trial's head: same seed, same data order."""
    from tfx.components.trainer import fn_args_utils

    from components.tuner.tuner_fn import tuner_fn
    config = _config(upstream['root'], head_trials=1, max_head_epochs=3, search='random')
    inputs = {key: [upstream[key]] for key in ('examples', 'schema', 'transform_graph')}
    fn_args = fn_args_utils.get_common_fn_args(inputs, _exec_properties(config), str(tmp_path / 'work'))
    tuner = tuner_fn(fn_args).tuner
    tuner.search()
    [trial] = tuner.oracle.trials.values()
    values = {k: v for k, v in trial.hyperparameters.values.items() if k != 'stage'}
    runs = []
    for _ in range(2):
        tf_keras.utils.set_random_seed(config.seed)
        head, metrics = tuner._train_head(tuner.trial_spec(values), values.get('head'))  # noqa: SLF001
        runs.append((head.get_weights(), metrics))
    assert runs[0][1] == runs[1][1] and runs[0][1]['val_loss'] == pytest.approx(trial.score)
    for first, second in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(first, second)


def test_tuning_needs_validation_images(upstream, tmp_path, monkeypatch):
    from components.trainer import data as data_lib
    real = data_lib.labels
    monkeypatch.setattr(data_lib, 'labels', lambda fn_args, split: real(fn_args, split)[:0] if split == 'eval'
                        else real(fn_args, split))
    with pytest.raises(ValueError, match='eval split, which has no images'):
        _run_tuner(upstream, tmp_path, head_trials=1)


def test_cached_features_must_fit_in_max_feature_gb(upstream, tmp_path):
    with pytest.raises(ValueError, match=r'tuning.max_feature_gb: the features of \d+ images for head kinds gap, '
                                         r'flatten \(1280 \+ 1280 values each\)'):
        _run_tuner(upstream, tmp_path, head=['gap', 'flatten'], max_feature_gb=1e-6)


def test_head_kind_is_searched_for_feature_maps_only():
    from components.tuner.oracle import head_space
    from components.tuner.tuner import searches_head_kind
    from conftest import backbone_spec, training_spec
    assert searches_head_kind(training_spec())
    hub = training_spec([backbone_spec(name='hub', hub_handle='https://tfhub.dev/example/feature_vector/1')])
    assert not searches_head_kind(hub)
    assert [hp.name for hp in head_space(TuningSpec(), search_head_kind=False).space] == [
        'learning_rate', 'dropout', 'head_l2', 'hidden_units']
    assert [hp.name for hp in head_space(TuningSpec(), search_head_kind=True).space][-1] == 'head'


@pytest.mark.parametrize('with_tuner', [False, True], ids=['without-tuner', 'with-tuner'])
def test_model_report_takes_the_tuner_results_when_given(tmp_path, monkeypatch, with_tuner):
    from components.report import component
    monkeypatch.setattr(component.evaluation_results, 'read', lambda uri, names: {'overall': {'accuracy': 0.9}})
    model_run, evaluation, blessing, results, report = (
        standard_artifacts.ModelRun(), standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing(),
        standard_artifacts.TunerResults(), component.ModelReport())
    for name, artifact in dict(run=model_run, evaluation=evaluation, blessing=blessing, results=results,
                               report=report).items():
        artifact.uri = str(tmp_path / name)
        (tmp_path / name).mkdir()
    (tmp_path / 'run' / reports.TRAINING_SUMMARY_FILE).write_text(json.dumps({'class_names': ['a', 'b']}))
    blessing.set_int_custom_property('blessed', 1)
    rows = [{'trial_id': '0', 'score': 0.4, 'dropout': 0.1, 'stage': 'head'}]
    (tmp_path / 'results' / component.TUNER_RESULTS_FILE).write_text(json.dumps(rows))
    inputs = {'model_run': [model_run], 'evaluation': [evaluation], 'blessing': [blessing]}
    if with_tuner:
        inputs['tuner_results'] = [results]
    component.ModelReportGen.EXECUTOR_SPEC.executor_class().Do(inputs, {'report': [report]}, {})
    summary = json.loads((tmp_path / 'report' / component.SUMMARY_JSON).read_text())
    markdown = (tmp_path / 'report' / component.SUMMARY_MARKDOWN).read_text()
    assert summary['blessed'] is True
    if with_tuner:
        assert summary['tuning']['chosen_trial'] == '0' and summary['tuning']['chosen_values'] == {'dropout': 0.1}
        assert '## Tuner' in markdown and '| **0 chosen** | 0.4000 | 0.1 |' in markdown
    else:
        assert 'tuning' not in summary and '## Tuner' not in markdown


def test_tuning_report_of_plain_rows_marks_the_best():
    rows = [{'trial_id': '1', 'score': 0.7, 'dropout': 0.1}, {'trial_id': '0', 'score': 0.5, 'dropout': 0.3}]
    tuning = tuning_trials(rows)
    assert tuning['chosen_trial'] == '0' and [t['trial_id'] for t in tuning['trials']] == ['0', '1']
    assert tuning['trials'][0]['chosen'] and not tuning['trials'][1]['chosen']


# --- The config's `tuning:` ----------------------------------------------------------------------


def _load(tmp_path, tuning):
    path = tmp_path / 'config.yaml'
    values = dict(data_root=str(tmp_path), output_dir=str(tmp_path / 'out'))
    if tuning != 'absent':
        values['tuning'] = tuning
    path.write_text(yaml.safe_dump(values))
    return load_config(path)


@pytest.mark.parametrize('tuning,expected', [('absent', None), (None, None), ({}, TuningSpec()),
                                             ({'head_trials': 4}, TuningSpec(head_trials=4))])
def test_tuning_is_off_unless_configured(tmp_path, tuning, expected):
    config = _load(tmp_path, tuning)
    assert config.tuning == expected
    components = {c.id for c in tfx_pipeline.create_pipeline(config).components}
    assert ('Tuner' in components) == (expected is not None)


def test_tuning_can_be_switched_on_with_set(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(dict(data_root=str(tmp_path), output_dir=str(tmp_path / 'out'))))
    config = load_config(path, ['tuning.head_trials=3', 'tuning.fine_tune_trials=1'])
    assert (config.tuning.head_trials, config.tuning.fine_tune_trials) == (3, 1)


@pytest.mark.parametrize('tuning,message', [
    ({'head_trails': 3}, r'tuning.head_trails: unknown key'),
    ({'head_trials': 0}, r'tuning.head_trials: Input should be greater than or equal to 1'),
    ({'fine_tune_trials': -1}, r'tuning.fine_tune_trials: Input should be greater than or equal to 0'),
    ({'search': 'grid'}, r"tuning.search: Input should be 'bayesian' or 'random'"),
    ({'learning_rate': [0.1, 0.001]}, r'tuning.learning_rate: needs \[min, max\] with min < max'),
    ({'learning_rate': [0, 0.1]}, r'tuning.learning_rate: needs \[min, max\] with min < max, both in \(0, 10\]'),
    ({'dropout': [0.1, 1.0]}, r'tuning.dropout: needs \[min, max\]'),
    ({'fine_tune_at': [0.5, 1.0]}, r'tuning.fine_tune_at: needs \[min, max\]'),
    ({'head': ['gap', 'avg']}, r"tuning.head.1: Input should be 'gap', 'max' or 'flatten'"),
    ({'head_l2': []}, r'tuning.head_l2: needs a list of distinct choices'),
    ({'head_l2': [0.0, -1e-4]}, r'tuning.head_l2: penalties must be >= 0'),
    ({'hidden_units': [0, 0]}, r'tuning.hidden_units: needs a list of distinct choices'),
    ({'learning_rate': None, 'dropout': None, 'head_l2': None, 'hidden_units': None, 'head': None},
     r'tuning: every head hyper-parameter .* is null: nothing to search'),
    ({'fine_tune_trials': 2, 'fine_tune_at': None, 'fine_tune_learning_rate': None},
     r'tuning: fine_tune_trials is set but fine_tune_at and fine_tune_learning_rate are both null'),
    ('everything', r'tuning: Input should be a valid dictionary'),
])
def test_bad_tuning_keys_are_named(tmp_path, tuning, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, tuning)


def test_fine_tuning_trials_need_fine_tuning(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(dict(data_root=str(tmp_path), output_dir=str(tmp_path / 'out'),
                                        fine_tune_epochs=0, tuning={'fine_tune_trials': 2})))
    with pytest.raises(ConfigError, match='tuning.fine_tune_trials: fine_tune_epochs is 0'):
        load_config(path)
