"""The statistics of the previous successful run, kept in a folder: found without ML Metadata.

A container step on Kubeflow cannot query the cluster's ML Metadata, and open-source Kubeflow
refuses TFX's resolver executors (components/evaluator/baseline.py says more), so, like the
served model, the statistics DataValidator compares with live in a folder, `data_baseline_dir`.
RecordDataBaseline, the last step of a run, adds the run's statistics there, so a run that
failed or was blocked never becomes the baseline. A version is complete once its DONE file is
written; the newest KEEP versions are kept.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Dict, List, Optional

import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2

STATISTICS_FILE = 'FeatureStats.pb'  # TFX StatisticsGen's name, in a Split-<name> folder per split
DONE_FILE = 'DONE'
KEEP = 3


def latest(baseline_dir: str) -> Optional[str]:
    """The newest complete version folder in baseline_dir, or None."""
    complete = _complete_versions(baseline_dir)
    return os.path.join(baseline_dir, complete[-1]) if complete else None


def _complete_versions(baseline_dir: str) -> List[str]:
    """Names of the version folders with a DONE file, oldest first (they are named by time)."""
    if not tf.io.gfile.isdir(baseline_dir):
        return []
    versions = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(baseline_dir))
    return [v for v in versions if tf.io.gfile.exists(os.path.join(baseline_dir, v, DONE_FILE))]


def load(version_dir: str) -> Dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """{split: statistics} of a version folder (or of a StatisticsGen artifact's folder)."""
    statistics = {}
    for name in sorted(tf.io.gfile.listdir(version_dir)):
        name = name.rstrip('/')
        path = os.path.join(version_dir, name, STATISTICS_FILE)
        if name.startswith('Split-') and tf.io.gfile.exists(path):
            statistics[name[len('Split-'):]] = read_statistics(path)
    return statistics


def read_statistics(path: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    proto = statistics_pb2.DatasetFeatureStatisticsList()
    with tf.io.gfile.GFile(path, 'rb') as f:
        proto.ParseFromString(f.read())
    return proto


def record(baseline_dir: str, statistics_dir: str, splits: List[str], run_id: str) -> str:
    """Copies the splits' statistics into a new version folder; returns its path."""
    version = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')
    target = os.path.join(baseline_dir, version)
    for split in splits:
        tf.io.gfile.makedirs(os.path.join(target, f'Split-{split}'))
        tf.io.gfile.copy(os.path.join(statistics_dir, f'Split-{split}', STATISTICS_FILE),
                         os.path.join(target, f'Split-{split}', STATISTICS_FILE), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(target, DONE_FILE), 'w') as f:
        json.dump({'run': run_id, 'statistics': statistics_dir, 'splits': splits}, f)
    _prune(baseline_dir)
    return target


def _prune(baseline_dir: str) -> None:
    for version in _complete_versions(baseline_dir)[:-KEEP]:
        tf.io.gfile.rmtree(os.path.join(baseline_dir, version))
