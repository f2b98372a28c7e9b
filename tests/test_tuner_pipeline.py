"""The pipeline with `tuning:` on tiny generated images, run as users run it (`python -m pipeline.local_runner`).

The Tuner runs two head trials and one fine-tuning trial; the Trainer must train with the values
it chose and ModelReport must list the trials.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_image_folder, tiny_config_values
from pipeline import run_summary
from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent
TUNING = {'head_trials': 2, 'fine_tune_trials': 1, 'fine_tune_trial_epochs': 1}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp('tuning')
    data = make_image_folder(root / 'images', per_class=15)
    config_path = root / 'config.yaml'
    config_path.write_text(yaml.safe_dump(tiny_config_values(
        data, root / 'output', split_ratios={'train': 60, 'eval': 20, 'test': 20}, augmentation=False,
        tuning=TUNING)))
    (root / 'home').mkdir()
    env = dict(os.environ, HOME=str(root / 'home'), PYTHONPATH=str(REPO))
    for variable in ('PIPELINE_CONFIG', 'KERAS_HOME', 'MPLCONFIGDIR'):
        env.pop(variable, None)
    result = subprocess.run([sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f'local_runner exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n'
                    f'stderr:\n{result.stderr[-8000:]}')
    config = load_config(config_path)
    summary = run_summary.latest_run(config)
    [best_file] = Path(config.pipeline_root).glob('Tuner/best_hyperparameters/*/best_hyperparameters.txt')
    [results_file] = Path(config.pipeline_root).glob('Tuner/tuner_results/*/tuner_results.json')
    model_run = Path(summary.model_uri).parent.parent / 'model_run' / Path(summary.model_uri).name
    return dict(result=result, config=config, summary=summary,
                best=json.loads(best_file.read_text())['values'], rows=json.loads(results_file.read_text()),
                training=json.loads((model_run / 'training_summary.json').read_text()),
                report=Path(summary.report_uri))


def test_the_tuner_runs_before_the_trainer(run):
    states = {node.node_id: node.state for node in run['summary'].nodes}
    assert states.get('Tuner') == 'ran' and states['Trainer'] == 'ran', states
    assert all(state == 'ran' for state in states.values()), states
    assert sorted(row['stage'] for row in run['rows']) == ['fine_tune', 'head', 'head']
    assert set(run['best']) == {'learning_rate', 'dropout', 'head_l2', 'hidden_units', 'head', 'fine_tune_at',
                                'fine_tune_learning_rate'}
    # The trials are logged on the console, not printed by KerasTuner.
    console = run['result'].stderr + run['result'].stdout
    assert console.count('Tuner trial ') == 3 and 'Search: Running Trial' not in console


def test_the_trainer_trained_with_the_tuned_values(run):
    best, training = run['best'], run['training']
    trained = training['hyperparameters']
    for name in ('learning_rate', 'dropout', 'head_l2', 'head', 'fine_tune_learning_rate'):
        expected = pytest.approx(best[name]) if isinstance(best[name], float) else best[name]
        assert trained[name] == expected, name
    assert trained['hidden_units'] == ([best['hidden_units']] if best['hidden_units'] else [])
    assert [b['fine_tune_at'] for b in training['backbones']] == [best['fine_tune_at']]
    # FOR THE TRAINER SIDE TO CHECK (components/trainer/image_trainer.py writes it): the values
    # the Trainer took from the Tuner, as received, in training_summary.json. The working tree
    # writes them under `recipe`; a top-level key counts too.
    recipe = training.get('recipe', {})
    from_tuner = training.get('hyperparameters_from_tuner', recipe.get('hyperparameters_from_tuner'))
    assert from_tuner == best


def test_the_model_report_lists_the_trials_and_marks_the_chosen_one(run):
    summary = json.loads((run['report'] / 'summary.json').read_text())
    tuning = summary['tuning']
    assert len(tuning['trials']) == 3 and [t['stage'] for t in tuning['trials']] == ['head', 'head', 'fine_tune']
    [chosen] = [t for t in tuning['trials'] if t['chosen']]
    assert chosen['stage'] == 'fine_tune' and chosen['values'] == run['best'] == tuning['chosen_values']
    head_scores = [t['score'] for t in tuning['trials'] if t['stage'] == 'head']
    assert head_scores == sorted(head_scores)
    markdown = (run['report'] / 'summary.md').read_text()
    assert '## Tuner' in markdown and f'**{chosen["trial_id"]} chosen**' in markdown
