"""The whole pipeline on tiny generated images, through the same entry points users run.

Run 1 goes through `python -m pipeline.demo` (the `tfx` CLI with the local engine, as
`make demo` does) with min_accuracy 0: a model must be pushed. Run 2 goes through
`python -m pipeline.local_runner --set min_accuracy=1.01`: the gate must fail and the
serving directory must stay exactly as it was.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import CLASS_COLOURS, image_bytes, make_image_folder, tiny_config_values
from pipeline import predict, run_summary
from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _run(args, env, cwd=REPO):
    result = subprocess.run([sys.executable, '-m'] + args, cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f'{args} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n'
                    f'stderr:\n{result.stderr[-6000:]}')
    return result


def _serving_tree(serving_dir: Path):
    return sorted(str(p.relative_to(serving_dir)) for p in serving_dir.rglob('*'))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e')
    data = make_image_folder(root / 'images', per_class=15)
    config_path = root / 'config.yaml'
    config_path.write_text(yaml.safe_dump(tiny_config_values(
        data, root / 'output', split_ratios={'train': 60, 'eval': 20, 'test': 20},
        # float32 too: it converts without loss, so one variant is always pushed.
        tflite=['float32', 'float16', 'int8'],
        # Drift from few images: the second run's data is identical, every figure must be 0.
        data_drift={'min_images': 5})))
    home, temp = root / 'home', root / 'temp'
    home.mkdir()
    temp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(temp), PYTHONPATH=str(REPO))
    for variable in ('PIPELINE_CONFIG', 'KERAS_HOME', 'MPLCONFIGDIR'):
        env.pop(variable, None)

    first = _run(['pipeline.demo', '--config', str(config_path)], env)
    config = load_config(config_path)
    first_summary = run_summary.latest_run(config)
    tree_after_first = _serving_tree(Path(config.serving_dir))

    second = _run(['pipeline.local_runner', '--config', str(config_path), '--set', 'min_accuracy=1.01'], env)
    second_summary = run_summary.latest_run(config)
    return dict(config=config, config_path=config_path, env=env, home=home, temp=temp, first=first,
                first_summary=first_summary,
                tree_after_first=tree_after_first, second=second, second_summary=second_summary)


def test_first_run_pushes_a_blessed_model_through_the_tfx_cli(runs):
    summary = runs['first_summary']
    states = {node.node_id: node.state for node in summary.nodes}
    assert set(states) == {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'DataValidator', 'Transform',
                           'Trainer', 'TFLiteExport', 'ServedModelBaseline', 'Evaluator', 'ModelReport', 'Pusher',
                           'RecordDataBaseline'}
    assert all(state == 'ran' for state in states.values()), states
    assert summary.blessed is True and summary.accuracy is not None
    assert summary.baseline_accuracy is None  # nothing blessed before
    versions = [p for p in Path(runs['config'].serving_dir).iterdir()]
    assert len(versions) == 1 and versions[0].name.isdigit()
    assert summary.pushed_destination == str(versions[0])
    assert 'Pushed model: ' + str(versions[0]) in runs['first'].stdout


def test_second_run_on_the_same_data_passes_data_validation(runs):
    first, second = runs['first_summary'].data_validation, runs['second_summary'].data_validation
    assert first['verdict'] == 'passed' and first['previous_run_statistics'] is None
    assert second['verdict'] == 'passed' and second['previous_run_statistics'] and second['findings'] == []
    # Every drift figure of identical data is 0, each against its threshold.
    assert second['drift'] and all(d['value'] == 0 for d in second['drift'])
    assert 'data: Data validation against the previous successful run: no anomalies' in runs['second'].stderr


def test_tfx_cli_state_stays_in_output_dir(runs):
    config = runs['config']
    assert (Path(config.cli_home) / config.pipeline_name / 'pipeline_args.json').exists()
    assert not (runs['home'] / 'tfx').exists()


def test_runs_leave_nothing_in_home_or_temp_folders(runs):
    """Keras, matplotlib, Beam, TFX and the input cache all write under output_dir instead."""
    left = sorted(str(p) for folder in (runs['home'], runs['temp']) for p in folder.rglob('*'))
    assert left == []
    assert (Path(runs['config'].output_dir) / 'keras' / 'keras.json').exists()


def test_demo_prints_predictions_of_the_pushed_model(runs):
    out = runs['first'].stdout
    assert 'Predictions of ' + runs['first_summary'].pushed_destination in out
    examples = str(REPO / 'data' / 'predict_examples')
    lines = [line for line in out.splitlines() if line.startswith(examples)]
    assert len(lines) == 4
    assert all(any(name in line for name in CLASS_COLOURS) for line in lines)


def test_console_output_is_readable(runs):
    console = runs['first'].stderr.splitlines() + runs['first'].stdout.splitlines()
    assert len(console) < 120, '\n'.join(console)
    assert any('Component Trainer is running' in line for line in console)
    assert any('epoch 2/2 (fine-tuning)' in line for line in console)


def test_failing_gate_pushes_nothing(runs):
    summary = runs['second_summary']
    states = {node.node_id: node.state for node in summary.nodes}
    assert states['ImageExampleGen'] == 'reused (cache)'
    assert states['Trainer'] == 'reused (cache)'
    assert states['Evaluator'] == 'ran'
    assert summary.blessed is False
    assert summary.baseline_accuracy is not None  # compared with the first run's model
    assert summary.pushed_destination is None
    assert _serving_tree(Path(runs['config'].serving_dir)) == runs['tree_after_first']
    assert 'gate: FAILED' in runs['second'].stderr


@pytest.fixture(scope='module')
def serving(runs):
    model_dir = predict.resolve_model_dir(runs['config'].serving_dir)
    return tf.saved_model.load(str(model_dir)).signatures['serving_default']


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_serving_signature_takes_raw_image_bytes(serving, fmt):
    images = [image_bytes(colour, size=(50, 30), fmt=fmt, seed=99) for colour in CLASS_COLOURS.values()]
    out = serving(image_bytes=tf.constant(images))
    probabilities = out['probabilities'].numpy()
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out['class_id'].numpy(), probabilities.argmax(axis=1))
    names = [name.decode() for name in out['class_name'].numpy()]
    assert set(names) <= set(CLASS_COLOURS)
    assert names == [sorted(CLASS_COLOURS)[i] for i in out['class_id'].numpy()]


def test_undecodable_bytes_are_an_error_not_a_crash(serving):
    with pytest.raises(tf.errors.InvalidArgumentError, match='Unknown image file format'):
        serving(image_bytes=tf.constant([b'definitely not an image']))
    # The process is still fine and the model still answers.
    assert serving(image_bytes=tf.constant([image_bytes((1, 2, 3))]))['probabilities'].shape == (1, 3)


def test_predict_reports_a_corrupt_file_and_classifies_the_rest(runs, tmp_path):
    folder = tmp_path / 'to_classify'
    folder.mkdir()
    for name, colour in CLASS_COLOURS.items():
        (folder / f'{name}.png').write_bytes(image_bytes(colour, seed=5))
    (folder / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff broken')
    args = ['pipeline.predict', '--model', runs['config'].serving_dir, '--top-k', '2', '--json', str(folder)]
    result = subprocess.run([sys.executable, '-m'] + args, cwd=REPO, env=runs['env'], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    by_file = {Path(item['file']).name: item for item in json.loads(result.stdout)['predictions']}
    assert set(by_file) == {'cat.png', 'dog.png', 'fox.png', 'corrupt.jpg'}
    assert 'not a decodable image' in by_file['corrupt.jpg']['error']
    for name in ('cat.png', 'dog.png', 'fox.png'):
        top = by_file[name]['top']
        assert len(top) == 2 and top[0]['probability'] >= top[1]['probability']
        assert top[0]['class'] in CLASS_COLOURS


def test_run_summary_command_prints_the_latest_run(runs):
    out = _run(['pipeline.run_summary', '--config', str(runs['config_path'])], runs['env']).stdout
    assert re.search(r'Trainer +reused \(cache\)', out), out
    assert 'trained on: default strategy, 1 replica(s) (CPU:0), precision float32; global batch 8, 8 per replica' in out
    assert 'gate: FAILED, model not blessed' in out and 'pushed: nothing' in out
    assert re.search(r'TFLite: float32 [0-9.]+, [0-9.]+ MB \(within budget\); float16 [0-9.]+, [0-9.]+ MB '
                     r'\((within budget|refused, drop [-+0-9.]+)\); int8 ', out), out


def test_reports_next_to_the_model_and_in_the_model_report(runs):
    from PIL import Image
    first = runs['first_summary']
    model_run = Path(first.model_uri).parent.parent / 'model_run' / Path(first.model_uri).name
    training = json.loads((model_run / 'training_summary.json').read_text())
    assert set(training['phase_metrics']) == {'head', 'fine-tuning'}
    assert {'eval_accuracy', 'test_accuracy'} <= set(training['phase_metrics']['fine-tuning'])
    assert sum(row['support'] for row in training['per_class_test']) == sum(training['data']['test'].values())
    assert [row['class'] for row in training['per_class_test']] == sorted(CLASS_COLOURS)
    assert list(model_run.glob('train/events.out.tfevents.*'))  # TensorBoard
    report = Path(first.report_uri)
    for name in ('learning_curves.png', 'confusion_matrix.png'):
        assert Image.open(report / name).format == 'PNG'
    summary = json.loads((report / 'summary.json').read_text())
    assert summary['blessed'] is True
    evaluation = summary['evaluation']
    assert {'sparse_categorical_accuracy', 'auc_micro', 'precision_micro', 'recall_micro'} <= set(evaluation['overall'])
    assert set(evaluation['per_class']) <= set(CLASS_COLOURS) and evaluation['per_class']
    assert '**Blessed: yes, pushed**' in (report / 'summary.md').read_text()
    second = json.loads((Path(runs['second_summary'].report_uri) / 'summary.json').read_text())
    assert second['blessed'] is False and second['evaluation']['gate_failures']


def test_tflite_variants_within_budget_are_pushed_inside_the_model(runs):
    report = json.loads((Path(runs['first_summary'].report_uri) / 'summary.json').read_text())['tflite']
    assert set(report['variants']) == {'float32', 'float16', 'int8'}
    assert report['variants']['float32']['accuracy_drop'] == 0 and 'float32' in report['pushed']
    pushed = Path(runs['first_summary'].pushed_destination)
    assert (pushed / 'saved_model.pb').exists()
    files = sorted(p.name for p in (pushed / 'tflite').iterdir()) if (pushed / 'tflite').exists() else []
    accepted = report['pushed']
    assert files == sorted([f'{v}.tflite' for v in accepted] + (['labels.txt', 'model_info.json'] if accepted else []))
    for variant, result in report['variants'].items():
        # Within the budget exactly when pushed; the random-weight tiny model may lose its int8.
        assert result['pushed'] == (result['accuracy_drop'] <= 0.01), result
    text = (Path(runs['first_summary'].report_uri) / 'summary.md').read_text()
    assert '## TFLite variants (test split, against the SavedModel)' in text and '| SavedModel |' in text
    # The second run was not blessed: nothing more in serving/, TFLite files included.
    second = json.loads((Path(runs['second_summary'].report_uri) / 'summary.json').read_text())
    assert second['blessed'] is False and 'tflite' in second
    assert 'the model was not blessed, so none was pushed' in (
        Path(runs['second_summary'].report_uri) / 'summary.md').read_text()
    info = json.loads((pushed / 'tflite' / 'model_info.json').read_text())
    assert info['class_names'] == sorted(CLASS_COLOURS) and info['image_size'] == 32


def test_predict_classifies_with_a_pushed_tflite_file_as_with_the_savedmodel(runs, capsys):
    pushed = Path(runs['first_summary'].pushed_destination)
    examples = str(REPO / 'data' / 'predict_examples')
    tops = []
    for model in (pushed, pushed / 'tflite' / 'float32.tflite'):
        out = _run(['pipeline.predict', '--model', str(model), '--json', examples], runs['env']).stdout
        tops.append([p['top'][0]['class'] for p in json.loads(out)['predictions']])
    assert len(tops[0]) == 4 and tops[0] == tops[1]


def test_transparent_png_is_served_as_the_image_flattened_onto_the_background(serving):
    """Transparency is composited onto white (the default background) by the served graph,
    exactly as if the sender had flattened the image first; the colour hidden under the
    transparent pixels does not count."""
    import io
    from PIL import Image
    rng = np.random.default_rng(7)
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = CLASS_COLOURS['fox']  # hidden under alpha 0 on the left: must not count
    rgba[:, 20:, :3] = CLASS_COLOURS['cat'] + rng.integers(-10, 10, (30, 20, 3))
    rgba[:, 20:, 3] = 255
    rgba[:, 15:20, 3] = 128  # half transparent: blended with white
    transparent = Image.fromarray(rgba, 'RGBA')
    flattened = Image.alpha_composite(Image.new('RGBA', transparent.size, (255, 255, 255, 255)), transparent)
    alpha_dropped = transparent.convert('RGB')  # what a decoder that ignores alpha shows

    def encoded(image):
        buffer = io.BytesIO()
        image.save(buffer, format='PNG')
        return buffer.getvalue()

    out = serving(image_bytes=tf.constant([encoded(transparent), encoded(flattened.convert('RGB')),
                                           encoded(alpha_dropped)]))
    probabilities = out['probabilities'].numpy()
    # The flattened PNG rounds the half-transparent band to whole numbers: nearly equal, not exactly.
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-2)
    assert out['class_id'].numpy()[0] == out['class_id'].numpy()[1]
    dropped, flattened_difference = (np.abs(probabilities[0] - probabilities[i]).max() for i in (2, 1))
    assert dropped > 10 * flattened_difference, (dropped, flattened_difference)


def test_recipe_auto_writes_what_it_chose(runs):
    first = runs['first_summary']
    model_run = Path(first.model_uri).parent.parent / 'model_run' / Path(first.model_uri).name
    recipe = json.loads((model_run / 'training_summary.json').read_text())['recipe']
    assert recipe['recipe'] == 'auto'
    # The tiny config sets head_epochs and fine_tune_epochs; auto chose the rest.
    assert {'learning_rate', 'dropout', 'head_l2', 'fine_tune_schedule', 'early_stopping_patience'} <= set(
        recipe['chosen'])
    assert 'head_epochs' not in recipe['chosen'] and 'fine_tune_epochs' not in recipe['chosen']
    candidates = recipe['head_candidates']
    assert len(candidates) == 7  # 4 learning rates, then 3 more regularisations at the best
    best = min(candidates, key=lambda c: c['val_loss'])
    assert (recipe['chosen']['learning_rate'], recipe['chosen']['dropout']) == (best['learning_rate'], best['dropout'])
    assert recipe['reproduce_with']['recipe'] == 'tutorial'
    assert recipe['reproduce_with']['learning_rate'] == best['learning_rate']
    assert isinstance(recipe['kept_head_only_model'], bool)


def test_report_command_prints_and_opens_the_latest_runs_page(runs, tmp_path):
    """`python -m pipeline.report` prints (and with --open opens) the latest run's report.html;
    demo and local_runner print where it is."""
    first, second = runs['first_summary'], runs['second_summary']
    assert f'Report: {first.report_uri}/report.html' in runs['first'].stdout
    assert f'report: {second.report_uri}/report.html' in runs['second'].stderr
    page = Path(second.report_uri) / 'report.html'
    out = _run(['pipeline.report', '--config', str(runs['config_path'])], runs['env']).stdout
    assert out.strip() == str(page) and page.exists()
    opened, browser_command = tmp_path / 'opened.txt', tmp_path / 'browser.sh'
    browser_command.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser_command.chmod(0o755)
    _run(['pipeline.report', '--config', str(runs['config_path']), '--open'],
         dict(runs['env'], BROWSER=str(browser_command)))  # webbrowser runs $BROWSER with the URL
    assert opened.read_text().strip() == page.as_uri()


def test_report_page_of_a_real_run_in_chromium(runs, tmp_path):
    """The first run's report.html passes test_report_html.py's browser checks, and shows the
    mistakes the Trainer recorded, each with its true and predicted class."""
    from test_report_html import Chromium, check_page
    first = runs['first_summary']
    model_run = Path(first.model_uri).parent.parent / 'model_run' / Path(first.model_uri).name
    training = json.loads((model_run / 'training_summary.json').read_text())
    record = json.loads((model_run / 'misclassified.json').read_text())
    tested = sum(training['data']['test'].values())
    correct = sum(round(row['recall'] * row['support']) for row in training['per_class_test'])
    assert (record['test_images'], record['misclassified']) == (tested, tested - correct)
    assert len(record['images']) == min(tested - correct, 24)
    for item in record['images']:  # file names are <class>/<name>: the examples lined up with the predictions
        assert item['file'].split('/')[0] == item['true_class'] != item['predicted_class'], item
    with Chromium(tmp_path / 'chromium') as browser:
        check_page(browser, Path(first.report_uri) / 'report.html', tmp_path / 'report.png')
        cards = browser.evaluate("Array.from(document.querySelectorAll('#mistakes .thumb')).map(c => c.innerText)")
    assert len(cards) == len(record['images'])
    for item, card in zip(record['images'], cards):
        assert f'true: {item["true_class"]}' in card and f'predicted: {item["predicted_class"]}' in card, card
