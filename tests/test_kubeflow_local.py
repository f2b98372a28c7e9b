"""The compiled Kubeflow spec, run by kfp.local's DockerRunner: every step in the project's image.

Three runs on the sample data, each a fresh compile of the same config, as a schedule would
start them: the first pushes a model (nothing served yet: judged by min_accuracy alone), the
second (with `tuning:`, so TFX's Tuner runs in a container of its own too) is compared with the
model the first pushed, the third (min_accuracy 1.01) fails the gate and leaves the serving
directory as it was. Every step runs, ModelReport included.

Needs Docker and the image (`make image`); `make kubeflow-local` builds it and runs this file.
Marked `docker`, so `make test` leaves it out (see pytest.ini).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get('KUBEFLOW_LOCAL_IMAGE', 'image-transfer-learning:latest')
STEPS = ('ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'DataValidator', 'Transform', 'Trainer',
         'TFLiteExport', 'ServedModelBaseline', 'Evaluator', 'ModelReport', 'Pusher', 'RecordDataBaseline')

pytestmark = pytest.mark.docker


def _image_exists() -> bool:
    try:
        return subprocess.run(['docker', 'image', 'inspect', IMAGE], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    if not _image_exists():
        pytest.fail(f'Docker image {IMAGE} not found: run `make kubeflow-local` (it builds it with `make image`)')
    root = tmp_path_factory.mktemp('kfp_local')
    shutil.copytree(REPO / 'data' / 'sample', root / 'data')
    return root


def _run(root: Path, run_name: str, **overrides) -> dict:
    config = dict(
        # pipeline_root is the one folder kfp.local mounts: the data and serving_dir live in it.
        pipeline_name='kfp-local', data_root=str(root / 'data'), output_dir=str(root), pipeline_root=str(root),
        container_image=IMAGE, weights='imagenet-torchvision', image_size=96, head_epochs=2, fine_tune_epochs=1,
        learning_rate=0.001, batch_size=32, min_accuracy=0.0, max_accuracy_drop=1.0,
    )
    config.update(overrides)
    config_path = root / f'{run_name}.yaml'
    config_path.write_text(yaml.safe_dump(config))
    before = {p.name for p in root.iterdir()}
    result = subprocess.run([sys.executable, '-m', 'kubeflow.local_run', '--config', str(config_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    (root / f'{run_name}.log').write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    runs = [p for p in root.iterdir() if p.is_dir() and p.name not in before
            and p.name.startswith('kfp-local-')]
    assert len(runs) == 1, runs
    return {'outputs': runs[0], 'log': result.stdout + result.stderr}


def _task(run: dict, step: str) -> Path:
    """kfp.local names a task's folder after its component's name without kfp's `comp-` prefix,
    which TFX's component names do not have: it drops their first five characters instead."""
    return run['outputs'] / step[len('comp-'):]


def _serving(root: Path):
    serving = root / 'serving'
    return sorted(str(p.relative_to(serving)) for p in serving.rglob('*')) if serving.exists() else []


def _evaluation(run: dict) -> dict:
    from components.evaluator import evaluation_results
    return evaluation_results.read(str(_task(run, 'Evaluator') / 'evaluation'))


def _blessed(run: dict) -> bool:
    blessing = _task(run, 'Evaluator') / 'blessing'
    return (blessing / 'BLESSED').exists()


@pytest.fixture(scope='module')
def runs(root):
    first = _run(root, 'first', tflite=['float32', 'int8'])  # float32 converts without loss: pushed
    served_after_first = _serving(root)
    second = _run(root, 'second', tuning={'head_trials': 2, 'max_head_epochs': 5})
    served_after_second = _serving(root)
    third = _run(root, 'third', min_accuracy=1.01)
    return dict(first=first, second=second, third=third, served_after_first=served_after_first,
                served_after_second=served_after_second, served_after_third=_serving(root))


def test_every_step_ran_in_its_container(runs):
    for name in ('first', 'second', 'third'):
        steps = STEPS + (('Tuner',) if name == 'second' else ())
        for step in steps:
            assert (_task(runs[name], step) / 'executor_output.json').exists(), (name, step)
        assert runs[name]['log'].count(f"Found image '{IMAGE}'") == len(steps), name


def test_data_is_validated_against_the_previous_runs_statistics_in_the_containers(runs):
    def report(name):
        return json.loads((_task(runs[name], 'DataValidator') / 'anomalies' / 'data_validation.json').read_text())
    first, second = report('first'), report('second')
    assert first['verdict'] == 'passed' and first['previous_run_statistics'] is None
    # RecordDataBaseline of the first run left its statistics where the second run's validator looked.
    assert second['verdict'] == 'passed' and second['previous_run_statistics'] and second['drift']
    assert all(d['value'] == 0 for d in second['drift'])


def test_the_tuners_best_values_reach_the_trainer_in_the_containers(runs):
    second = runs['second']
    best = json.loads((_task(second, 'Tuner') / 'best_hyperparameters' / 'best_hyperparameters.txt').read_text())
    trials = json.loads((_task(second, 'Tuner') / 'tuner_results' / 'tuner_results.json').read_text())
    assert len(trials) == 2 and best['values']
    summary = json.loads((_task(second, 'Trainer') / 'model_run' / 'training_summary.json').read_text())
    assert summary['recipe']['hyperparameters_from_tuner'] == best['values']
    report = json.loads((_task(second, 'ModelReport') / 'report' / 'summary.json').read_text())
    assert len(report['tuning']['trials']) == 2


def test_first_run_has_no_baseline_and_pushes(runs):
    first = runs['first']
    assert not (_task(first, 'ServedModelBaseline') / 'baseline' / 'Format-Serving').exists()
    assert _evaluation(first)['baseline'] == {}
    assert _blessed(first)
    versions = {path.split('/')[0] for path in runs['served_after_first']}
    assert len(versions) == 1 and any(p.endswith('saved_model.pb') for p in runs['served_after_first'])


def test_tflite_variants_within_budget_are_served_beside_the_savedmodel(runs):
    report = json.loads((_task(runs['first'], 'TFLiteExport') / 'exported' / 'tflite_report.json').read_text())
    assert set(report['variants']) == {'float32', 'int8'} and 'float32' in report['pushed']
    assert report['variants']['int8']['types']['input'] == 'uint8'
    served = runs['served_after_first']
    version = served[0].split('/')[0]
    expected = {f'{version}/tflite/{v}.tflite' for v in report['pushed']} | {f'{version}/tflite/labels.txt'}
    assert expected <= set(served)
    refused = set(report['variants']) - set(report['pushed'])
    assert not {f'{version}/tflite/{v}.tflite' for v in refused} & set(served)


def test_second_run_is_compared_with_the_served_model(runs):
    second = runs['second']
    baseline = _task(second, 'ServedModelBaseline') / 'baseline' / 'Format-Serving'
    assert (baseline / 'saved_model.pb').exists()
    evaluation = _evaluation(second)
    assert 'sparse_categorical_accuracy' in evaluation['baseline']
    assert _blessed(second)  # max_accuracy_drop 1.0
    assert len({path.split('/')[0] for path in runs['served_after_second']}) == 2


def test_failing_gate_pushes_nothing(runs):
    third = runs['third']
    assert not _blessed(third)
    assert _evaluation(third)['gate_failures']
    assert runs['served_after_third'] == runs['served_after_second']


def test_model_report_ran_in_the_container(runs):
    report = _task(runs['third'], 'ModelReport') / 'report'
    summary = json.loads((report / 'summary.json').read_text())
    assert summary['blessed'] is False
    assert (report / 'summary.md').exists() and (report / 'learning_curves.png').exists()
