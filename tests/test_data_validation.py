"""Data checked before it trains: image facts, statistics per split and class, the schema, drift
from the previous successful run, and the gate (block stops the run before Transform, warn goes on).

One real run makes the baseline; each scenario changes a copy of its images and runs the
pipeline again (`python -m pipeline.local_runner`) against a copy of that baseline.
"""
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from components.data_validation import baseline as baseline_lib
from components.data_validation import checks
from components.data_validation.component import problems_message
from components.data_validation.spec import DataValidationSpec
from components.example_gen.ingestion import inspection
from components.example_gen.ingestion.image_facts import describe
from conftest import make_image_folder, tiny_config_values
from pipeline import run_summary
from pipeline.config import ConfigError, PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / 'schemas' / 'schema.pbtxt'
IMAGE_FEATURES = ('image_height', 'image_width', 'image_channels', 'image_format', 'image_file_bytes',
                  'image_brightness', 'image_saturation', 'class_name')


# --- What an image looks like -------------------------------------------------------------

def test_image_facts_of_colour_gray_and_transparent_pixels():
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 200
    facts = describe(red, 'PNG', 1234)
    assert (facts.height, facts.width, facts.channels, facts.source_format, facts.file_bytes) == (40, 60, 3, 'PNG', 1234)
    assert facts.brightness == pytest.approx(0.299 * 200, abs=0.01) and facts.saturation == pytest.approx(1.0)
    gray = describe(np.full((10, 10), 128, np.uint8), 'JPEG', 10)
    assert gray.channels == 1 and gray.saturation == 0 and gray.brightness == pytest.approx(128)
    # Half of the image is white and fully transparent: only the visible, black half counts.
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (255, 255, 255, 0)
    rgba[:, 5:, 3] = 255
    assert describe(rgba, 'PNG', 10).brightness == 0
    # BMP's fourth channel is not transparency for Transform, so not here either.
    assert describe(rgba, 'BMP', 10, alpha_is_transparency=False).brightness == pytest.approx(127.5)


def test_facts_come_with_every_ingested_file_even_a_converted_one():
    buffer = io.BytesIO()
    Image.new('L', (30, 20), 90).save(buffer, format='TIFF')
    converted = inspection.inspect(buffer.getvalue(), 10**8, True)
    assert converted.conversion and converted.facts.source_format == 'TIFF'
    assert (converted.facts.width, converted.facts.height, converted.facts.channels) == (30, 20, 1)
    assert converted.facts.file_bytes == len(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new('RGB', (8, 6), (10, 200, 10)).save(buffer, format='JPEG')
    as_is = inspection.inspect(buffer.getvalue(), 10**8, True)
    assert not as_is.conversion and as_is.facts.source_format == 'JPEG' and as_is.facts.saturation > 0.8


def test_every_format_ingestion_opens_is_in_the_schemas_format_domain():
    domain = next(f.string_domain for f in _schema().feature if f.name == 'image_format')
    Image.init()
    assert set(Image.OPEN) | {'MPO'} <= set(domain.value), 'a Pillow upgrade added formats: add them to the schema'


def test_config_names_bad_data_validation_keys(tmp_path, image_folder):
    values = tiny_config_values(image_folder, tmp_path / 'out')
    config = PipelineConfig(**values)
    assert config.data_validation == 'block' and config.data_baseline_dir == str(tmp_path / 'out' / 'data_baseline')
    for bad, key in [(dict(data_validation='strict'), 'data_validation'),
                     (dict(data_drift={'class_balanse': 0.2}), 'class_balanse'),
                     (dict(data_drift={'image_size': 0}), 'image_size')]:
        path = tmp_path / 'bad.yaml'
        path.write_text(yaml.safe_dump({**values, **bad}))
        with pytest.raises(ConfigError, match=key):
            load_config(path)


# --- Real runs ----------------------------------------------------------------------------

def _run_pipeline(config_path: Path, env, *extra):
    return subprocess.run([sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _config(root: Path, data: Path, name: str, **overrides) -> Path:
    path = root / f'{name}.yaml'
    path.write_text(yaml.safe_dump(tiny_config_values(data, root / name, tflite=[], head_epochs=1,
                                                      fine_tune_epochs=1, **overrides)))
    return path


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    """A successful run: its statistics are the baseline every scenario is compared with."""
    root = tmp_path_factory.mktemp('data-validation')
    # 50 per class: about 30 of each in the training split, drift's minimum (data_drift.min_images).
    data = make_image_folder(root / 'images', per_class=50)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    config_path = _config(root, data, 'first')
    result = _run_pipeline(config_path, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = load_config(config_path)
    return dict(root=root, data=data, env=env, config=config, output=result.stdout + result.stderr)


def _statistics_of(config):
    """{split: statistics} of the newest StatisticsGen output of a run."""
    statistics_root = Path(config.pipeline_root) / 'StatisticsGen' / 'statistics'
    newest = max(statistics_root.iterdir(), key=lambda p: int(p.name))
    return baseline_lib.load(str(newest))


def test_statistics_describe_the_images_per_split_and_per_class(first_run):
    statistics = _statistics_of(first_run['config'])
    assert set(statistics) == {'train', 'eval', 'test'}
    for split, stats in statistics.items():
        names = [d.name for d in stats.datasets]
        assert names[0] == checks.ALL_EXAMPLES and {'class_name_cat', 'class_name_dog', 'class_name_fox'} <= set(names)
        features = {'.'.join(f.path.step): f for f in stats.datasets[0].features}
        assert set(IMAGE_FEATURES) <= set(features), split
        width = features['image_width'].num_stats
        assert (width.min, width.max) == (24, 24)  # conftest.image_bytes draws 24 x 20 images
        channels = {b.label for b in features['image_channels'].string_stats.rank_histogram.buckets}
        assert channels == {'1', '3', '4'}  # make_image_folder mixes gray, RGB and RGBA (a category)
        formats = {b.label for b in features['image_format'].string_stats.rank_histogram.buckets}
        assert formats == {'PNG', 'JPEG'}
    assert sum(sum(checks.class_counts(s).values()) for s in statistics.values()) == 150


def test_first_run_checks_the_schema_and_becomes_the_baseline(first_run):
    assert 'Data validation against the schema only (no previous successful run): no anomalies' in first_run['output']
    assert len(os.listdir(first_run['config'].data_baseline_dir)) == 1
    summary = run_summary.latest_run(first_run['config'])
    assert summary.data_validation['verdict'] == 'passed' and summary.data_validation['findings'] == []
    assert 'RecordDataBaseline' in [n.node_id for n in summary.nodes]


def _grayscale_thumbnails(data: Path):
    for path in (data / 'fox').iterdir():
        with Image.open(path) as image:
            small = image.convert('L').resize((8, 6))
        small.save(path, format='JPEG' if path.suffix == '.jpg' else 'PNG')


def _class_vanished(data: Path):
    shutil.rmtree(data / 'fox')


def _class_balance_moved(data: Path):
    for path in sorted((data / 'dog').iterdir())[4:]:
        path.unlink()


SCENARIOS = {
    # The fox images' own histograms move (per class, training split), and the split's too.
    'grayscale-thumbnails': (_grayscale_thumbnails, ['image_width', 'image_height', 'image_saturation',
                                                     'image_channels']),
    'class-vanished': (_class_vanished, ['class_name']),
    'class-balance': (_class_balance_moved, ['class_name']),
}


def _scenario(first_run, name: str, mode: str):
    """A copy of the images changed by the scenario, run against a copy of the first run's baseline."""
    root = first_run['root']
    data = root / f'images-{name}-{mode}'
    shutil.copytree(first_run['data'], data)
    SCENARIOS[name][0](data)
    config_path = _config(root, data, f'{name}-{mode}', data_validation=mode)
    config = load_config(config_path)
    shutil.copytree(first_run['config'].data_baseline_dir, config.data_baseline_dir)
    return config, _run_pipeline(config_path, first_run['env'])


@pytest.fixture(scope='module')
def blocked(first_run):
    """Each scenario run with `data_validation: block`."""
    return {name: _scenario(first_run, name, 'block') for name in SCENARIOS}


def _schema():
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils
    return io_utils.parse_pbtxt_file(str(SCHEMA), schema_pb2.Schema())


@pytest.mark.parametrize('name', list(SCENARIOS))
def test_changed_data_stops_the_run_before_transform(blocked, name):
    config, result = blocked[name]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert 'Pipeline failed: DataValidationError: Data validation found' in output
    for feature in SCENARIOS[name][1]:
        assert f': {feature}: ' in output, (feature, output[-3000:])
    assert '--set data_validation=warn' in output
    ran = {node.node_id: node.state for node in run_summary.latest_run(config).nodes}
    assert ran.get('DataValidator') == 'failed'
    assert 'Transform' not in ran and 'Trainer' not in ran
    # A blocked run is not a baseline: the next run is still compared with the first one.
    assert len(os.listdir(config.data_baseline_dir)) == 1

    # The same statistics with `warn`: the same findings, and no error.
    previous = baseline_lib.load(baseline_lib.latest(config.data_baseline_dir))
    result = checks.validate(_statistics_of(config), _schema(), DataValidationSpec(mode='warn'), previous)
    assert {f.feature for f in result.findings} >= set(SCENARIOS[name][1])
    assert problems_message(checks.to_json(result, DataValidationSpec(mode='warn'), 'x', 'warned'), 'x')


def test_grayscale_thumbnails_are_found_in_their_own_class(blocked):
    """The training split's fox images, compared with the previous run's fox images."""
    config, _ = blocked['grayscale-thumbnails']
    previous = baseline_lib.load(baseline_lib.latest(config.data_baseline_dir))
    result = checks.validate(_statistics_of(config), _schema(), DataValidationSpec(), previous)
    fox = {f.feature for f in result.findings if f.class_name == 'fox'}
    assert {'image_width', 'image_height', 'image_saturation'} <= fox
    assert not [f for f in result.findings if f.class_name in ('cat', 'dog')]
    drift = {(d.class_name, d.feature): d.value for d in result.drift if d.split == 'train'}
    assert drift[('fox', 'image_width')] > 0.9 and drift[('cat', 'image_width')] == 0


def test_warn_reports_the_change_and_trains(first_run):
    config, result = _scenario(first_run, 'class-balance', 'warn')
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert 'run goes on (data_validation: warn)' in output and ': class_name: ' in output
    summary = run_summary.latest_run(config)
    assert summary.data_validation['verdict'] == 'warned'
    assert any(f['feature'] == 'class_name' for f in summary.data_validation['findings'])
    assert {'Transform', 'Trainer', 'Pusher'} <= {n.node_id for n in summary.nodes}
    report = (Path(summary.report_uri) / 'report.html').read_text()
    assert 'Checks before training' in report and 'The Linfty distance between current and previous' in report
    # dog's few remaining images are too few for its own histograms to mean anything.
    assert any("class 'dog'" in note for note in summary.data_validation['not_measured'])
    assert not [f for f in summary.data_validation['findings'] if f['class_name']]
    # The run succeeded: its data is now the baseline.
    assert len(os.listdir(config.data_baseline_dir)) == 2


def test_block_error_names_split_class_feature_and_the_way_to_accept():
    spec = DataValidationSpec()
    result = checks.Result(findings=[checks.Finding('train', 'image_width', 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH',
                                                    'JSD 0.9 above 0.1', 'fox')],
                           drift=[], counts={'train': {'fox': 3}}, previous_counts=None, anomalies={})
    report = checks.to_json(result, spec, None, 'blocked')
    message = problems_message(report)
    assert "split train, class 'fox': image_width: JSD 0.9 above 0.1" in message
    assert '--set data_validation=warn' in message
    assert '/x/data_validation.json' in problems_message(report, '/x/data_validation.json')
