"""report.html, the run's one web page, checked in a real browser: headless Chromium.

The page is rendered by the ModelReport component itself from a realistic model_run folder
(figures drawn by the Trainer's own code, thumbnails by components/trainer/misclassified.py),
then loaded in Chromium over the DevTools protocol (websocket-client; no chromedriver): no
console error, no request but the file itself, every image decoded, no sideways scrolling on a
laptop screen, a print stylesheet, and a full-page screenshot that is not blank. Without
Chromium these tests skip (`make test` installs it when it can), except under CI, where they fail.
test_pipeline_end_to_end.py loads the page of a real run the same way.
"""
import base64
import io
import json
import math
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASS_COLOURS, image_bytes, training_spec

LAPTOP = (1280, 800)


def chromium_binary() -> str:
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(name):
            return shutil.which(name)
    reason = ('chromium is not installed, so report.html cannot be checked in a browser '
              '(`make test` installs it with apt-get when run as root; else `sudo apt-get install chromium`)')
    if os.environ.get('CI'):
        pytest.fail(f'{reason}; CI is set, so it must be installed', pytrace=False)
    pytest.skip(reason)


class Chromium:
    """Headless Chromium driven over the Chrome DevTools Protocol, one page (tab)."""

    def __init__(self, profile: Path):
        import websocket
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / 'DevToolsActivePort'
        port_file.unlink(missing_ok=True)  # a previous browser's
        self.process = subprocess.Popen(
            [chromium_binary(), '--headless=new', '--remote-debugging-port=0', f'--user-data-dir={profile}',
             '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
             '--disable-background-networking', '--disable-component-update', '--disable-extensions',
             '--remote-allow-origins=*', f'--window-size={LAPTOP[0]},{LAPTOP[1]}', 'about:blank'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.socket, self.events, self._id = None, [], 0
        try:
            deadline = time.time() + 60
            while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
                if self.process.poll() is not None:
                    raise RuntimeError(f'chromium exited {self.process.returncode}: '
                                       f'{self.process.stderr.read()[-2000:]}')
                if time.time() > deadline:
                    raise TimeoutError('chromium did not write DevToolsActivePort within 60 s')
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            targets = json.load(no_proxy.open(f'http://127.0.0.1:{port}/json/list', timeout=30))
            page = next(t for t in targets if t['type'] == 'page')
            self.socket = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.socket:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.socket.send(json.dumps({'id': self._id, 'method': method, 'params': params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get('id') == self._id:
                if 'error' in message:
                    raise RuntimeError(f'{method}: {message["error"]}')
                return message.get('result', {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get('method') == event:
                return message['params']
        raise TimeoutError(event)

    def open(self, path: Path) -> None:
        self.events = []
        for domain in ('Page', 'Runtime', 'Log', 'Network'):
            self.send(f'{domain}.enable')
        self.send('Emulation.setDeviceMetricsOverride', width=LAPTOP[0], height=LAPTOP[1], deviceScaleFactor=1,
                  mobile=False)
        result = self.send('Page.navigate', url=path.resolve().as_uri())
        assert 'errorText' not in result, result
        self.wait_for('Page.loadEventFired')

    def evaluate(self, expression: str):
        result = self.send('Runtime.evaluate', expression=expression, returnByValue=True)
        assert 'exceptionDetails' not in result, result
        return result['result'].get('value')

    def errors(self) -> list:
        """Console errors, uncaught exceptions and browser log errors since the page was opened."""
        found = []
        for event in self.events:
            method, params = event.get('method'), event.get('params', {})
            if method == 'Runtime.consoleAPICalled' and params.get('type') in ('error', 'assert'):
                found.append(' '.join(str(a.get('value', a.get('description'))) for a in params.get('args', [])))
            elif method == 'Runtime.exceptionThrown':
                found.append(params['exceptionDetails'].get('text', 'exception'))
            elif method == 'Log.entryAdded' and params['entry']['level'] == 'error':
                found.append(params['entry'].get('text', '') + ' ' + params['entry'].get('url', ''))
        return found

    def requests(self) -> list:
        return [e['params']['request']['url'] for e in self.events if e.get('method') == 'Network.requestWillBeSent']

    def screenshot(self, width: int = LAPTOP[0]) -> bytes:
        """The whole page, however long, at width CSS pixels."""
        metrics = self.send('Page.getLayoutMetrics')
        height = math.ceil((metrics.get('cssContentSize') or metrics['contentSize'])['height'])
        self.send('Emulation.setDeviceMetricsOverride', width=width, height=height, deviceScaleFactor=1, mobile=False)
        png = base64.b64decode(self.send('Page.captureScreenshot', format='png', captureBeyondViewport=True)['data'])
        self.send('Emulation.setDeviceMetricsOverride', width=LAPTOP[0], height=LAPTOP[1], deviceScaleFactor=1,
                  mobile=False)
        return png


def check_page(browser: Chromium, page: Path, screenshot: Path) -> str:
    """Loads page and checks what every report page must pass; saves a full-page screenshot.
    Returns the page's visible text."""
    browser.open(page)
    assert browser.errors() == []
    assert [url for url in browser.requests() if not url.startswith(('file:', 'data:'))] == []
    images = browser.evaluate('Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])')
    assert images and all(complete and width > 0 for _, complete, width in images), images
    for width in (1024, LAPTOP[0], 1600):  # no sideways scrolling on a laptop or a wide screen
        browser.send('Emulation.setDeviceMetricsOverride', width=width, height=LAPTOP[1], deviceScaleFactor=1,
                     mobile=False)
        overflow = browser.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth')
        assert overflow <= 0, f'{overflow} px wider than a {width} px window'
    png = browser.screenshot()
    screenshot.write_bytes(png)
    picture = Image.open(io.BytesIO(png)).convert('RGB')
    colours = picture.getcolors(maxcolors=1 << 24)
    assert picture.height > LAPTOP[1] and len(colours) > 100, (picture.size, len(colours))
    white = dict((colour, count) for count, colour in colours).get((255, 255, 255), 0)
    assert white < 0.97 * picture.width * picture.height, 'the screenshot is nearly all white'
    # Printable: a print stylesheet (no navigation on paper) and Chromium's own PDF of the page.
    browser.send('Emulation.setEmulatedMedia', media='print')
    assert browser.evaluate("getComputedStyle(document.querySelector('nav')).display") == 'none'
    browser.send('Emulation.setEmulatedMedia', media='')
    pdf = base64.b64decode(browser.send('Page.printToPDF', printBackground=True)['data'])
    assert pdf.startswith(b'%PDF') and len(pdf) > 10_000
    return browser.evaluate('document.body.innerText')


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    with Chromium(tmp_path_factory.mktemp('chromium-profile')) as chromium:
        yield chromium


# A realistic run: three classes, 60 test images, a model that is right about half the time,
# fine-tuned from epoch 6, with the Tuner, TFLite variants (int8 over budget) and a failing gate.
NAMES = sorted(CLASS_COLOURS)
TEST_IMAGES = 60


def _artifact(kind, folder: Path):
    folder.mkdir(parents=True)
    artifact = kind()
    artifact.uri = str(folder)
    return artifact


def _test_split():
    """Labels, probabilities (more than 24 mistakes, the most confident one test image 3, a cat
    taken for a dog) and raw examples (file, encoded image, label) of a made-up test split."""
    rng = np.random.default_rng(0)
    labels = np.arange(TEST_IMAGES) % 3
    logits = rng.normal(0, 1, (TEST_IMAGES, 3))
    logits[np.arange(TEST_IMAGES), labels] += 0.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[3] = [0.02, 0.97, 0.01]
    formats = [('PNG', 'RGB', 'png'), ('JPEG', 'RGB', 'jpg'), ('PNG', 'L', 'png'), ('PNG', 'RGBA', 'png')]
    examples = []
    for i, label in enumerate(labels):
        fmt, mode, ext = formats[i % 4]
        name = NAMES[label]
        examples.append((f'{name}/{name}_{i:03d}.{ext}',
                         image_bytes(CLASS_COLOURS[name], size=(48 + i % 3 * 16, 40), fmt=fmt, mode=mode, seed=i),
                         int(label)))
    return labels, probabilities, examples


def _model_run(folder: Path, labels, probabilities, examples) -> None:
    """What the Trainer writes into model_run, with the Trainer's own code where it draws."""
    from components.trainer import misclassified, reports
    folder.mkdir(parents=True, exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    epochs = 10
    history = {'accuracy': list(np.linspace(0.45, 0.8, epochs)), 'val_accuracy': list(np.linspace(0.5, 0.72, epochs)),
               'loss': list(np.linspace(1.1, 0.5, epochs)), 'val_loss': list(np.linspace(1.0, 0.7, epochs))}
    reports.learning_curves(history, 5, str(folder / reports.LEARNING_CURVES_FILE))
    matrix = reports.confusion_matrix(labels, predicted, 3)
    reports.confusion_matrix_figure(matrix, NAMES, str(folder / reports.CONFUSION_MATRIX_FILE))
    spec = training_spec()
    candidates = [{'learning_rate': lr, 'dropout': 0.2, 'head_l2': 0.0, 'val_loss': loss, 'val_accuracy': acc,
                   'best_epoch': best, 'epochs_run': 8, 'seconds': 3.2}
                  for lr, loss, acc, best in ((1e-4, 0.91, 0.61, 8), (1e-3, 0.74, 0.70, 6), (1e-2, 0.88, 0.66, 3))]
    summary = {
        'class_names': NAMES,
        'data': {'train': {'cat': 120, 'dog': 118, 'fox': 121}, 'eval': {'cat': 20, 'dog': 21, 'fox': 19},
                 'test': {name: int(np.sum(labels == i)) for i, name in enumerate(NAMES)}},
        'backbones': [{'name': 'mobilenet_v2', 'image_size': 160, 'weights': 'imagenet-torchvision',
                       'fine_tune_at': 100}],
        'hyperparameters': {k: v for k, v in spec.model_dump().items() if k != 'backbones'},
        'recipe': {'recipe': 'auto', 'chosen': {'learning_rate': 0.001, 'dropout': 0.2, 'head_l2': 0.0,
                                                'augmentation': {'flip': 'horizontal', 'rotation': 0.2}},
                   'head_candidates': candidates,
                   'augmentation_candidates': [{'augmentation': {}, 'val_loss': 0.74, 'seconds': 1.0},
                                               {'augmentation': {'flip': 'horizontal', 'rotation': 0.2},
                                                'val_loss': 0.71, 'seconds': 2.0}],
                   'kept_head_only_model': False, 'hyperparameters_from_tuner': {'dropout': 0.2},
                   'reproduce_with': {'recipe': 'tutorial', 'learning_rate': 0.001, 'dropout': 0.2,
                                      'augmentation': {'flip': 'horizontal', 'rotation': 0.2}}},
        'devices': {'strategy': 'MirroredStrategy', 'replicas': 2, 'precision_policy': 'mixed_float16',
                    'description': 'MirroredStrategy strategy, 2 replica(s) (GPU:0, GPU:1; Tesla T4 (compute '
                                   'capability 7.5); Tesla T4 (compute capability 7.5)), precision mixed_float16; '
                                   'global batch 32, 16 per replica'},
        'epochs_trained': epochs, 'fine_tune_start_epoch': 5, 'resumed_from_epoch': None,
        'phase_metrics': {'head': {'eval_accuracy': 0.68, 'eval_loss': 0.81, 'test_accuracy': 0.65, 'test_loss': 0.84},
                          'fine-tuning': {'eval_accuracy': 0.72, 'eval_loss': 0.7,
                                          'test_accuracy': float(np.mean(predicted == labels)), 'test_loss': 0.75}},
        'history': history,
        'per_class_test': reports.per_class_metrics(matrix, NAMES),
    }
    reports.write_json(summary, str(folder / reports.TRAINING_SUMMARY_FILE))
    assert misclassified.write(str(folder), labels, probabilities, NAMES, examples) is not None


def _tflite_report() -> dict:
    return {'image_size': 160, 'max_accuracy_drop': 0.01, 'test_images': TEST_IMAGES,
            'latency': 'median of 50 single-image calls, 1 CPU thread',
            'savedmodel': {'accuracy': 0.7, 'size_bytes': 18_970_000, 'latency_ms': 18.5, 'images': TEST_IMAGES},
            'variants': {
                'float16': {'size_bytes': 4_490_000, 'accuracy': 0.7, 'accuracy_drop': 0.0, 'latency_ms': 4.2,
                            'pushed': True, 'file': 'tflite/float16.tflite'},
                'int8': {'size_bytes': 2_720_000, 'accuracy': 0.6833, 'accuracy_drop': 0.0167, 'latency_ms': 3.8,
                         'pushed': False, 'file': 'rejected/int8.tflite',
                         'reason': 'loses 0.0167 test accuracy against the SavedModel, more than '
                                   'max_tflite_accuracy_drop 0.01'}},
            'pushed': ['float16']}


@pytest.fixture(scope='module')
def report_dir(tmp_path_factory):
    """ModelReport's output for the realistic run, made by the component's executor."""
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format
    from tensorflow_model_analysis.proto import config_pb2
    from tfx.types import standard_artifacts

    from components.evaluator import gate
    from components.example_gen.ingestion import report as ingestion_report
    from components.report import component
    from components.tflite.component import REPORT_FILE as TFLITE_REPORT

    root = tmp_path_factory.mktemp('report')
    labels, probabilities, examples = _test_split()
    model_run = _artifact(standard_artifacts.ModelRun, root / 'model_run')
    _model_run(Path(model_run.uri), labels, probabilities, examples)
    evaluation = _artifact(standard_artifacts.ModelEvaluation, root / 'evaluation')
    # The eval config TFMA writes beside its results: the report reads the gate's thresholds from it.
    (root / 'evaluation' / 'eval_config.json').write_text(json_format.MessageToJson(config_pb2.EvalRun(
        eval_config=gate.eval_config(0.35, 0.01), version=tfma.__version__)))
    blessing = _artifact(standard_artifacts.ModelBlessing, root / 'blessing')
    blessing.set_int_custom_property('blessed', 0)
    tuner_results = _artifact(standard_artifacts.TunerResults, root / 'tuner')
    (root / 'tuner' / component.TUNER_RESULTS_FILE).write_text(json.dumps(
        [{'trial_id': '0', 'score': 0.74, 'dropout': 0.2, 'learning_rate': 0.001, 'stage': 'head'},
         {'trial_id': '1', 'score': 0.79, 'dropout': 0.5, 'learning_rate': 0.001, 'stage': 'head'}]))
    tflite = _artifact(standard_artifacts.Model, root / 'tflite')
    (root / 'tflite' / TFLITE_REPORT).write_text(json.dumps(_tflite_report()))
    examples_artifact = _artifact(standard_artifacts.Examples, root / 'examples')
    counts = {'train': {'cat': 120, 'dog': 118, 'fox': 121}, 'eval': {'cat': 20, 'dog': 21, 'fox': 19},
              'test': {'cat': 20, 'dog': 20, 'fox': 20}}
    skipped = [{'file': 'cat/notes.txt', 'reason': 'unsupported_extension', 'detail': '.txt'},
               {'file': 'dog/broken.jpg', 'reason': 'corrupt_image', 'detail': 'Invalid JPEG data'}]
    (root / 'examples' / ingestion_report.REPORT_FILE).write_text(json.dumps(
        ingestion_report.build('class_folders', NAMES, counts, skipped, [], [])))
    report = _artifact(component.ModelReport, root / 'report')

    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    overall = {'example_count': TEST_IMAGES, 'sparse_categorical_accuracy': accuracy, 'auc_micro': 0.66,
               'precision_micro': accuracy, 'recall_micro': accuracy}
    evaluated = {'overall': overall, 'baseline': {**overall, 'sparse_categorical_accuracy': accuracy + 0.02},
                 'per_class': {name: {'example_count': 20, 'sparse_categorical_accuracy': accuracy} for name in NAMES},
                 'gate_failures': ['sparse_categorical_accuracy changed by -0.0200 against the last blessed model; '
                                   'allowed drop: 0.0100 (max_accuracy_drop)']}
    original = component.evaluation_results.read
    component.evaluation_results.read = lambda uri, names: evaluated
    try:
        component.ModelReportGen.EXECUTOR_SPEC.executor_class().Do(
            {'model_run': [model_run], 'evaluation': [evaluation], 'blessing': [blessing],
             'tuner_results': [tuner_results], 'tflite': [tflite], 'examples': [examples_artifact]},
            {'report': [report]}, {})
    finally:
        component.evaluation_results.read = original
    return root / 'report'


def test_page_is_self_contained_and_complete(report_dir):
    page = (report_dir / 'report.html').read_text()
    assert 'http://' not in page and 'https://' not in page and '<script' not in page
    assert page.count('src="data:image/png;base64,') == 2 + 24  # two figures, the capped mistakes
    summary = json.loads((report_dir / 'summary.json').read_text())
    assert summary['gate'] == {'min_accuracy': 0.35, 'max_accuracy_drop': 0.01}
    assert summary['ingestion']['skipped_by_reason'] == {'corrupt_image': 1, 'unsupported_extension': 1}
    for text in ('Not blessed', 'The gate failed', 'allowed drop: 0.0100', 'accuracy &ge; 0.35',
                 'Misclassified test images', 'Metrics after each phase', 'Recipe: auto', 'Tuner trials',
                 'dog/broken.jpg', 'corrupt_image', 'Exported models', '18.97 MB', '4.49 MB',
                 'not pushed: loses 0.0167', 'learning_rate: 0.001\n',
                 'augmentation: {flip: horizontal, rotation: 0.2}\n',
                 'Trained on: MirroredStrategy strategy, 2 replica(s) (GPU:0, GPU:1; Tesla T4'):
        assert text in page, text


def test_most_confident_mistakes_first_capped():
    from components.trainer.misclassified import most_confident_mistakes
    labels = np.array([0, 1, 2, 0, 1])
    probabilities = np.array([[0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.0, 0.4, 0.6], [0.05, 0.0, 0.95], [0.6, 0.4, 0.0]])
    assert most_confident_mistakes(labels, probabilities) == [3, 0, 4]
    assert most_confident_mistakes(labels, probabilities, limit=2) == [3, 0]
    assert most_confident_mistakes(labels[1:3], probabilities[1:3]) == []


def test_misclassified_written_in_confidence_order_with_thumbnails(report_dir):
    record = json.loads((report_dir.parent / 'model_run' / 'misclassified.json').read_text())
    labels, probabilities, _ = _test_split()
    assert record['test_images'] == TEST_IMAGES
    assert record['misclassified'] == int(np.sum(probabilities.argmax(axis=1) != labels)) > 24
    images = record['images']
    assert len(images) == 24
    assert images[0] == {'file': 'cat/cat_003.png', 'true_class': 'cat', 'predicted_class': 'dog',
                         'probability': pytest.approx(0.97), 'true_class_probability': pytest.approx(0.02),
                         'thumbnail': 'misclassified/000.png'}
    assert [i['probability'] for i in images] == sorted((i['probability'] for i in images), reverse=True)
    assert all(i['file'].startswith(i['true_class'] + '/') and i['true_class'] != i['predicted_class']
               for i in images)
    for item in images:
        thumbnail = Image.open(report_dir.parent / 'model_run' / item['thumbnail'])
        assert thumbnail.format == 'PNG' and max(thumbnail.size) == 96 and thumbnail.mode == 'RGB'


def test_examples_out_of_order_write_nothing(tmp_path):
    from components.trainer import misclassified
    labels, probabilities, examples = _test_split()
    shuffled = examples[1:] + examples[:1]
    assert misclassified.write(str(tmp_path), labels, probabilities, NAMES, shuffled) is None
    assert misclassified.write(str(tmp_path), labels, probabilities, NAMES, examples[:-1]) is None
    assert list(tmp_path.iterdir()) in ([], [tmp_path / 'misclassified'])
    assert misclassified.read(str(tmp_path)) is None


def test_a_summary_without_most_sections_still_renders():
    """An older run's summary, or one without a test split: the page leaves those parts out."""
    from components.report import html
    page = html.render({'class_names': ['a', 'b'], 'blessed': True}, {})
    assert 'Blessed' in page and 'Misclassified' not in page and 'Exported models' not in page


def test_page_in_chromium(browser, report_dir):
    text = check_page(browser, report_dir / 'report.html', report_dir.parent / 'report.png')
    for heading in ('Evaluation on the test split', 'Misclassified test images', 'Training', 'Data',
                    'Exported models'):
        assert heading in text
    # Every figure is shown at a readable size, not squeezed.
    widths = browser.evaluate("Array.from(document.querySelectorAll('figure img')).map(i => i.clientWidth)")
    assert len(widths) == 2 and min(widths) >= 300, widths


def test_a_misclassified_image_shows_its_true_and_predicted_class(browser, report_dir):
    browser.open(report_dir / 'report.html')
    cards = browser.evaluate("Array.from(document.querySelectorAll('#mistakes .thumb')).map(c => "
                             "[c.innerText, c.querySelector('img').naturalWidth])")
    assert len(cards) == 24
    text, width = cards[0]
    assert 'cat_003.png' in text and 'true: cat' in text and 'predicted: dog 97.0%' in text, text
    assert width == 96
