"""The Beam components on a real Flink cluster started here give the DirectRunner's results.

One pipeline, run twice on the same tiny image folder: by `python -m pipeline.local_runner`
(Beam's DirectRunner) and by `python -m pipeline.flink` (a standalone Flink 1.18 cluster on
127.0.0.1 with two TaskManager processes, Beam's job server, Python SDK workers that each
TaskManager starts: Beam's PROCESS environment). Then: the same examples in every split (by content hash), the same statistics, the
same Evaluator metrics and blessing; the work ran on both TaskManagers; nothing is left running.

The Trainer is not a Beam component, and what it learns depends on the order in which it reads
the examples, which a distributed runner does not keep (Flink writes each split in parallel
shards). So both runs train with a learning rate of 1e-30: the model is the seeded initial one
in both, and any difference in the Evaluator's metrics comes from the Evaluator.

Needs Java and Maven (the first run downloads Flink and assembles Beam's job server, see
pipeline/flink/jars.py); without them these tests skip, except under CI, where they fail.
"""
import glob
import gzip
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import make_image_folder, tiny_config_values
from pipeline.flink import jars
from pipeline.flink.cluster import ClusterError, LocalFlinkCluster

REPO = Path(__file__).resolve().parent.parent
SPLITS = ('train', 'eval', 'test')


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        reason = f'{tool} is not installed: the Flink cluster needs it'
        if os.environ.get('CI'):
            pytest.fail(f'{reason}; CI is set, so it must be installed', pytrace=False)
        pytest.skip(reason)


def _run(args, env):
    result = subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        pytest.fail(f'{args} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n'
                    f'stderr:\n{result.stderr[-6000:]}')
    return result


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """{'direct': output_dir, 'flink': output_dir} of the two runs."""
    _require('java')
    _require('mvn')
    root = tmp_path_factory.mktemp('flink')
    data = make_image_folder(root / 'images', per_class=10)
    home, temp = root / 'home', root / 'temp'
    home.mkdir()
    temp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(temp), PYTHONPATH=str(REPO), IMAGE_TL_CACHE=str(jars.cache_dir()))
    for variable in ('PIPELINE_CONFIG', 'KERAS_HOME', 'MPLCONFIGDIR'):
        env.pop(variable, None)
    outputs = {}
    for runner, command in (('direct', ['pipeline.local_runner']), ('flink', ['pipeline.flink', '--task-managers', '2'])):
        outputs[runner] = root / runner
        config = root / f'{runner}.yaml'
        config.write_text(yaml.safe_dump(tiny_config_values(
            data, outputs[runner], split_ratios={'train': 60, 'eval': 20, 'test': 20}, tflite=[],
            head_epochs=1, fine_tune_epochs=0, learning_rate=1e-30)))
        _run([*command, '--config', str(config)], env)
    return outputs


def _artifact(output_dir: Path, node: str, key: str) -> Path:
    found = glob.glob(str(output_dir / 'pipeline_root' / node / key / '*'))
    assert len(found) == 1, f'{node}.{key}: {found}'
    return Path(found[0])


def _content_hashes(output_dir: Path, split: str):
    import tensorflow as tf
    hashes = []
    for path in glob.glob(str(_artifact(output_dir, 'ImageExampleGen', 'examples') / f'Split-{split}' / '*.gz')):
        for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
            example = tf.train.Example.FromString(record.numpy())
            hashes.append(example.features.feature['content_sha256'].bytes_list.value[0].decode())
    return sorted(hashes)


def _close(a, b, path='') -> None:
    """a == b, floats to 1e-9 relative (sums in another order), everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f'{path}: keys {sorted(a)} != {sorted(b)}'
        for key in a:
            _close(a[key], b[key], f'{path}.{key}')
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f'{path}: {len(a)} items != {len(b)}'
        for index, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f'{path}[{index}]')
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f'{path}: {a} != {b}'
    else:
        assert a == b, f'{path}: {a!r} != {b!r}'


def _statistics(output_dir: Path, split: str) -> dict:
    from google.protobuf import json_format
    from tensorflow_metadata.proto.v0 import statistics_pb2
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString((_artifact(output_dir, 'StatisticsGen', 'statistics') / f'Split-{split}' /
                           'FeatureStats.pb').read_bytes())
    as_dict = json_format.MessageToDict(stats)
    # The whole split ('All Examples') first, then the slices of each class (StatisticsGen slices
    # by class_name), whose order is the runner's.
    as_dict['datasets'].sort(key=lambda dataset: (dataset.get('name') != 'All Examples', dataset.get('name', '')))
    for dataset in as_dict['datasets']:
        dataset['features'].sort(key=lambda feature: json.dumps(feature.get('path')))
    return as_dict


def test_flink_ran_the_beam_components_on_both_task_managers(runs):
    from bench.pipeline_costs import component_windows
    from pipeline.config import load_config
    record = json.loads((runs['flink'] / 'flink' / 'jobs.json').read_text())
    jobs = record['jobs']
    assert all(job['state'] == 'FINISHED' for job in jobs), jobs
    # One Flink job each for ImageExampleGen, StatisticsGen and the Evaluator. Transform submits
    # none: its preprocessing_fn has no analyzers and it materializes nothing (the Trainer
    # applies the graph), so it has no data to process on any runner.
    windows = component_windows(load_config(runs['flink'].parent / 'flink.yaml'))
    ran_in = [[name for name, (start, end) in windows.items() if start <= job['start_time'] <= end] for job in jobs]
    assert ran_in == [['ImageExampleGen'], ['StatisticsGen'], ['Evaluator']], (ran_in, jobs)
    assert set().union(*(job['task_managers'] for job in jobs)) == {'taskmanager-1', 'taskmanager-2'}, jobs
    assert '--environment_type=PROCESS' in record['beam_args']
    # The Python code ran in SDK workers that each TaskManager started and served.
    for task_manager in ('taskmanager-1', 'taskmanager-2'):
        log = (runs['flink'] / 'flink' / 'logs' / f'{task_manager}.log').read_text()
        assert 'getProcessBundleDescriptor request' in log, task_manager
    workers = re.findall(r'SDK worker \S+ \(process (\d+)\) serving (\S+)',
                         (runs['flink'] / 'flink' / 'logs' / 'sdk-workers.log').read_text())
    assert len({endpoint for _, endpoint in workers}) >= 2, workers  # a control endpoint per TaskManager and job


def test_nothing_is_left_running(runs):
    record = json.loads((runs['flink'] / 'flink' / 'jobs.json').read_text())
    assert set(record['pids']) == {'jobmanager', 'taskmanager-1', 'taskmanager-2', 'job-server'}
    alive = [name for name, pid in record['pids'].items() if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f'still running: {alive}'
    assert not _processes_in(runs['flink'] / 'flink')


def _processes_in(folder: Path):
    """Processes whose working directory is folder: every cluster process and its children."""
    left = []
    for process in psutil.process_iter(['pid', 'cwd', 'cmdline']):
        if process.info['cwd'] and Path(process.info['cwd']) == folder:
            left.append(process.info)
    return left


@pytest.mark.parametrize('split', SPLITS)
def test_same_examples_in_every_split(runs, split):
    direct, flink = _content_hashes(runs['direct'], split), _content_hashes(runs['flink'], split)
    assert direct, f'no {split} examples'
    assert flink == direct


@pytest.mark.parametrize('split', SPLITS)
def test_same_statistics(runs, split):
    direct = _statistics(runs['direct'], split)
    assert direct['datasets'][0]['numExamples'] == str(len(_content_hashes(runs['direct'], split)))
    _close(_statistics(runs['flink'], split), direct)


def test_same_transform_output_schema(runs):
    schemas = [(_artifact(output, 'Transform', 'transform_graph') / 'transformed_metadata' / 'schema.pbtxt').read_text()
               for output in (runs['direct'], runs['flink'])]
    assert schemas[0] and schemas[1] == schemas[0]


def test_same_evaluator_metrics_and_blessing(runs):
    from components.evaluator import evaluation_results
    results = {runner: evaluation_results.read(str(_artifact(output, 'Evaluator', 'evaluation')))
               for runner, output in runs.items()}
    assert results['direct']['overall'], 'the Evaluator measured nothing'
    assert results['direct']['per_class'], 'no per-class slices'
    _close(results['flink'], results['direct'])
    blessings = {runner: sorted(p.name for p in _artifact(output, 'Evaluator', 'blessing').iterdir())
                 for runner, output in runs.items()}
    assert blessings['flink'] == blessings['direct'] and blessings['direct'] in (['BLESSED'], ['NOT_BLESSED'])


# Failing to start: a clear error at once, and nothing left behind.

def test_without_java_the_error_says_so(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(shutil, 'which', lambda tool, *a, **k: None if tool == 'java' else real_which(tool, *a, **k))
    cluster = LocalFlinkCluster(work_dir=str(tmp_path))
    with pytest.raises(ClusterError, match='java is not installed'):
        cluster.start()
    assert not cluster.processes


def test_a_busy_port_is_named(tmp_path):
    _require('java')
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        port = taken.getsockname()[1]
        cluster = LocalFlinkCluster(work_dir=str(tmp_path), rest_port=port)
        with pytest.raises(ClusterError, match=f'port {port} \\(Flink REST\\) is already in use'):
            cluster.start()
    assert not cluster.processes


def test_a_task_manager_that_dies_stops_the_cluster(monkeypatch, tmp_path):
    """A real JobManager starts, then a TaskManager JVM that cannot start (1 MB of heap)."""
    _require('java')
    _require('mvn')
    memory_settings = LocalFlinkCluster._memory_settings

    def too_little_heap(self, which):
        jvm_flags, dynamic = memory_settings(self, which)
        return (['-Xmx1m', '-Xms1m'] if which == 'TM' else jvm_flags), dynamic

    monkeypatch.setattr(LocalFlinkCluster, '_memory_settings', too_little_heap)
    cluster = LocalFlinkCluster(task_managers=2, work_dir=str(tmp_path), startup_timeout=120, log=lambda _: None)
    with pytest.raises(ClusterError, match='taskmanager-[12] exited with code'):
        cluster.start()
    assert 'jobmanager' in cluster.processes
    assert all(process.poll() is not None for process in cluster.processes.values())
    assert not _processes_in(tmp_path)
