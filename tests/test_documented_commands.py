"""Every `python -m ...` command the README documents, run as a user types it: a subprocess.

Tests that call a module's `main()` in-process cannot notice a broken entry point (an import
that fails only at the command's own start, a missing `__main__`); these can. The pipeline's
own commands (demo, local_runner, predict, run_summary) run in test_pipeline_end_to_end.py,
on the runs it makes, and kubeflow.local_run in test_kubeflow_local.py (with Docker, by
`make kubeflow-local`); the rest run here, on tiny data.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import kubeflow_config_values, make_image_folder, tiny_config_values

REPO = Path(__file__).resolve().parent.parent
README = REPO / 'README.md'
RUN_ELSEWHERE = {
    'pipeline.demo': 'test_pipeline_end_to_end.py', 'pipeline.local_runner': 'test_pipeline_end_to_end.py',
    'pipeline.predict': 'test_pipeline_end_to_end.py', 'pipeline.run_summary': 'test_pipeline_end_to_end.py',
    'kubeflow.local_run': 'test_kubeflow_local.py', 'pipeline.report': 'test_pipeline_end_to_end.py',
    'pipeline.flink': 'test_flink_runner.py',
}
RUN_HERE = ('pipeline.describe', 'kubeflow.runner', 'kubeflow.schedule', 'components.weights',
            'pipeline.fashion_mnist', 'components.storage')
# Benchmarks take minutes to hours; their entry points are checked with --help.
BENCHMARKS = ('bench.heads', 'bench.ingestion', 'bench.linear_probe', 'bench.run_all', 'bench.preprocessing_choices',
              'bench.recipe', 'bench.fine_tune_schedule', 'bench.datasets', 'bench.tflite_variants',
              'bench.data_drift', 'bench.flink_runner', 'bench.frozen_bottom')


def run(*args, cwd=REPO, expect=0, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop('PIPELINE_CONFIG', None)
    result = subprocess.run([sys.executable, '-m', *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != expect:
        pytest.fail(f'python -m {" ".join(args)} exited {result.returncode}, expected {expect}\n'
                    f'stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}')
    return result


def test_every_documented_command_is_run_by_a_test():
    documented = set(re.findall(r'python -m ([a-z_][\w.]*)', README.read_text()))
    assert documented, 'no `python -m` command found in the README'
    unknown = documented - set(RUN_ELSEWHERE) - set(RUN_HERE + BENCHMARKS)
    assert not unknown, f'README documents commands no test runs: {sorted(unknown)}'
    for module, test_file in RUN_ELSEWHERE.items():
        assert f"'{module}'" in Path(__file__).with_name(test_file).read_text(), f'{module} is not run by {test_file}'


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('commands')
    data = make_image_folder(root / 'images', per_class=2)
    path = root / 'config.yaml'
    path.write_text(yaml.safe_dump(tiny_config_values(data, root / 'output')))
    return path


def test_describe_reads_the_class_names_from_data_root(tiny_config):
    out = run('pipeline.describe', '--config', str(tiny_config)).stdout
    assert 'Model for 3 classes: cat, dog, fox' in out
    assert 'GlobalAveragePooling2D' in out and 'phase 2: fine-tuning' in out


def test_describe_as_the_readme_shows_it():
    """From the repository root with the default config (data/sample), an ensemble via --set."""
    out = run('pipeline.describe', '--set',
              'backbones=[mobilenet_v2, {name: vgg16, image_size: 224, weights: imagenet}]').stdout
    assert 'Model for 4 classes: bag, sneaker, trouser, tshirt_top' in out
    assert 'Backbone 2 of 2: vgg16' in out and 'Concatenate' in out


def test_describe_names_a_bad_key():
    result = run('pipeline.describe', '--set', 'head=pyramid', expect=2)
    assert 'head' in result.stderr and 'pyramid' in result.stderr


@pytest.fixture(scope='module')
def kubeflow_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('kubeflow_commands') / 'kubeflow.yaml'
    path.write_text(yaml.safe_dump(kubeflow_config_values()))
    return path


@pytest.mark.parametrize('suffix', ['.yaml', '.json'])
def test_kubeflow_runner_compiles(kubeflow_config, suffix):
    output = kubeflow_config.parent / 'build' / f'pipeline{suffix}'
    out = run('kubeflow.runner', '--config', str(kubeflow_config), '--output', str(output)).stdout
    assert output.exists() and f'Wrote {output}' in out


def test_kubeflow_schedule_dry_run_contacts_nothing(kubeflow_config):
    spec = kubeflow_config.parent / 'schedule' / 'pipeline.yaml'
    run('kubeflow.runner', '--config', str(kubeflow_config), '--output', str(spec))
    # Port 9 (discard) on loopback: nothing listens, so any request would fail the command.
    out = run('kubeflow.schedule', '--host', 'http://127.0.0.1:9', '--spec', str(spec),
              '--cron', '0 0 2 * * *', '--experiment', 'nightly', '--dry-run').stdout
    assert 'create_recurring_run' in out and '0 0 2 * * *' in out


def test_weights_import_and_verify(tmp_path):
    out = run('components.weights', 'import-torchvision', '--out', str(tmp_path)).stdout
    assert sorted(p.suffix for p in tmp_path.iterdir()) == ['.h5', '.h5'], out
    verify = run('components.weights', 'verify').stdout
    assert re.search(r'padding torchvision\s+top-1 1[5-9]/20', verify), verify


def test_fashion_mnist_export_or_a_clear_instruction(tmp_path):
    from pipeline import fashion_mnist
    args = ('pipeline.fashion_mnist', '--out', str(tmp_path / 'fm'), '--split', 'test',
            '--classes', 'bag', 'sneaker', '--per-class', '2')
    if (fashion_mnist.DEBIAN_DIR / fashion_mnist._FILES['test'][0]).exists():
        assert 'wrote 4 images of 2 classes' in run(*args).stdout
    else:
        assert 'apt-get install dataset-fashion-mnist' in run(*args, expect=2).stderr


def test_storage_startup_hook_is_installed():
    """`make venv` runs `python -m components.storage install`; `check` fails when it is missing."""
    assert 'installed' in run('components.storage', 'check').stdout


@pytest.mark.parametrize('module', BENCHMARKS)
def test_benchmark_entry_points_start(module):
    assert 'usage:' in run(module, '--help').stdout
