"""TFDV's checks of one run's statistics, as findings a person can act on.

For every split, the statistics of the whole split are checked against the schema (domains,
presence, types) and, when the previous successful run had that split, compared with its
statistics by the drift comparators the thresholds give (tfdv.validate_statistics with
previous_statistics: TFX's ExampleValidator never passes those, so drift never fires there).
In the training split each class is compared with the same class of the previous run too:
a class whose images became grayscale thumbnails moves its own histograms far more than the
split's. A class the previous run had in a split and this run has not is a finding of its own:
TFDV cannot see a value that is absent. A new class is one because the schema's domain of
class_name is the previous run's classes. The statistics are those of StatisticsGen, sliced by
class_name (pipeline.tfx_pipeline.statistics_options). Drift is only measured where both runs
have at least `min_images` images (in the split, or in the class); where they have fewer, the
result says so (`not_measured`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components.data_validation.spec import DataValidationSpec, DriftThresholds
from components.features import (CLASS_NAME_KEY, IMAGE_BRIGHTNESS_KEY, IMAGE_CHANNELS_KEY, IMAGE_FILE_BYTES_KEY,
                                 IMAGE_FORMAT_KEY, IMAGE_HEIGHT_KEY, IMAGE_SATURATION_KEY, IMAGE_WIDTH_KEY)

ALL_EXAMPLES = 'All Examples'  # TFDV's name of the slice holding every example
PER_CLASS_SPLIT = 'train'
KIND_FEATURES = (IMAGE_CHANNELS_KEY, IMAGE_FORMAT_KEY)  # categorical: L-infinity of their shares
SIZE_FEATURES = (IMAGE_HEIGHT_KEY, IMAGE_WIDTH_KEY, IMAGE_FILE_BYTES_KEY)  # numeric: Jensen-Shannon
COLOUR_FEATURES = (IMAGE_BRIGHTNESS_KEY, IMAGE_SATURATION_KEY)
CLASS_VANISHED = 'CLASS_VANISHED'

Statistics = Dict[str, statistics_pb2.DatasetFeatureStatisticsList]  # by split


@dataclasses.dataclass(frozen=True)
class Finding:
    """One anomaly: where (split, and class when it concerns one class), which feature, what."""
    split: str
    feature: str
    kind: str  # TFDV's anomaly type (e.g. COMPARATOR_L_INFTY_HIGH) or CLASS_VANISHED
    description: str
    class_name: Optional[str] = None

    def message(self) -> str:
        where = f'split {self.split}' + (f", class '{self.class_name}'" if self.class_name else '')
        return f'{where}: {self.feature}: {self.description}'


@dataclasses.dataclass(frozen=True)
class Drift:
    """One drift measurement against the previous run, whether or not above its threshold."""
    split: str
    feature: str
    measure: str  # L_INFTY or JENSEN_SHANNON_DIVERGENCE
    value: float
    threshold: float
    class_name: Optional[str] = None


@dataclasses.dataclass
class Result:
    findings: List[Finding]
    drift: List[Drift]
    counts: Dict[str, Dict[str, int]]  # split -> class -> images
    previous_counts: Optional[Dict[str, Dict[str, int]]]
    anomalies: Dict[str, anomalies_pb2.Anomalies]  # split -> TFDV's anomalies of the whole split
    not_measured: List[str] = dataclasses.field(default_factory=list)  # drift left out, and why


def validate(statistics: Statistics, schema: schema_pb2.Schema, spec: DataValidationSpec,
             previous: Optional[Statistics] = None) -> Result:
    """Checks every split of `statistics` (see the module docstring)."""
    import tensorflow_data_validation as tfdv  # heavy: only where checks run

    counts = {split: class_counts(stats) for split, stats in statistics.items()}
    previous_counts = {split: class_counts(stats) for split, stats in previous.items()} if previous else None
    known_classes = sorted({name for split in (previous_counts or {}).values() for name in split})
    with_drift = schema_for_run(schema, spec.drift, known_classes)
    without_drift = schema_for_run(schema, None, known_classes)
    minimum = spec.drift.min_images
    findings, drift, anomalies, not_measured = [], [], {}, []
    for split, stats in sorted(statistics.items()):
        before = previous.get(split) if previous else None
        images = sum(counts[split].values())
        images_before = sum(previous_counts[split].values()) if before else 0
        measured = before is not None and min(images, images_before) >= minimum
        if before is not None and not measured:
            not_measured.append(f'split {split}: {images} images now, {images_before} in the previous run '
                                f'(drift needs {minimum} in both)')
        split_anomalies = tfdv.validate_statistics(
            _only(stats, ALL_EXAMPLES), with_drift if measured else without_drift,
            previous_statistics=_only(before, ALL_EXAMPLES) if measured else None)
        anomalies[split] = split_anomalies
        findings += _findings(split_anomalies, split)
        drift += _drift(split_anomalies, split)
        if before is None:
            continue
        for name, count in sorted(previous_counts[split].items()):
            if count and not counts[split].get(name):
                findings.append(Finding(split, CLASS_NAME_KEY, CLASS_VANISHED,
                                        f"class '{name}' had {count} images in the previous run and has none now"))
        if split != PER_CLASS_SPLIT:
            continue
        for name in sorted(set(counts[split]) & set(previous_counts[split])):
            slice_name = class_slice(name)
            if not (_has_slice(stats, slice_name) and _has_slice(before, slice_name)):
                continue
            if min(counts[split][name], previous_counts[split][name]) < minimum:
                not_measured.append(f"split {split}, class '{name}': {counts[split][name]} images now, "
                                    f'{previous_counts[split][name]} in the previous run '
                                    f'(drift needs {minimum} in both)')
                continue
            class_anomalies = tfdv.validate_statistics(_only(stats, slice_name), with_drift,
                                                       previous_statistics=_only(before, slice_name))
            findings += [f for f in _findings(class_anomalies, split, name) if f.kind.startswith('COMPARATOR_')]
            drift += [d for d in _drift(class_anomalies, split, name) if d.feature != CLASS_NAME_KEY]
    return Result(findings, drift, counts, previous_counts, anomalies, not_measured)


def schema_for_run(schema: schema_pb2.Schema, thresholds: Optional[DriftThresholds],
                   known_classes: List[str]) -> schema_pb2.Schema:
    """The imported schema plus what depends on the run: class_name's domain (the previous
    run's classes, if any) and, with thresholds, the drift comparators."""
    checked = schema_pb2.Schema()
    checked.CopyFrom(schema)
    for feature in checked.feature:
        if feature.name == CLASS_NAME_KEY and known_classes:
            feature.string_domain.value[:] = known_classes
        if thresholds is None:
            continue
        if feature.name == CLASS_NAME_KEY:
            feature.drift_comparator.infinity_norm.threshold = thresholds.class_balance
        elif feature.name in KIND_FEATURES:
            feature.drift_comparator.infinity_norm.threshold = thresholds.image_kind
        elif feature.name in SIZE_FEATURES:
            feature.drift_comparator.jensen_shannon_divergence.threshold = thresholds.image_size
        elif feature.name in COLOUR_FEATURES:
            feature.drift_comparator.jensen_shannon_divergence.threshold = thresholds.image_colour
    return checked


def class_slice(class_name: str) -> str:
    """TFDV's name of the slice of one class (tfdv.utils.slicing_util.get_feature_value_slicer)."""
    return f'{CLASS_NAME_KEY}_{class_name}'


def class_counts(stats: statistics_pb2.DatasetFeatureStatisticsList) -> Dict[str, int]:
    """Images per class in a split, from class_name's histogram in the whole split's statistics."""
    dataset = _dataset(stats, ALL_EXAMPLES)
    for feature in dataset.features:
        if list(feature.path.step) == [CLASS_NAME_KEY] or feature.name == CLASS_NAME_KEY:
            return {bucket.label: int(bucket.sample_count)
                    for bucket in feature.string_stats.rank_histogram.buckets}
    return {}


def _dataset(stats: statistics_pb2.DatasetFeatureStatisticsList, name: str):
    if len(stats.datasets) == 1 and name == ALL_EXAMPLES:
        return stats.datasets[0]
    for dataset in stats.datasets:
        if dataset.name == name:
            return dataset
    raise KeyError(name)


def _has_slice(stats: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> bool:
    return any(dataset.name == name for dataset in stats.datasets)


def _only(stats: statistics_pb2.DatasetFeatureStatisticsList, name: str
          ) -> statistics_pb2.DatasetFeatureStatisticsList:
    """The statistics of one slice, as a list of one: what tfdv.validate_statistics compares."""
    return statistics_pb2.DatasetFeatureStatisticsList(datasets=[_dataset(stats, name)])


def _feature_name(path) -> str:
    return '.'.join(path.step)


def _findings(anomalies: anomalies_pb2.Anomalies, split: str, class_name: Optional[str] = None) -> List[Finding]:
    findings = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        for reason in info.reason:
            kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
            findings.append(Finding(split, feature, kind, reason.description or reason.short_description,
                                    class_name))
    if anomalies.HasField('dataset_anomaly_info'):
        for reason in anomalies.dataset_anomaly_info.reason:
            findings.append(Finding(split, '(dataset)', anomalies_pb2.AnomalyInfo.Type.Name(reason.type),
                                    reason.description or reason.short_description, class_name))
    return findings


def _drift(anomalies: anomalies_pb2.Anomalies, split: str, class_name: Optional[str] = None) -> List[Drift]:
    return [Drift(split, _feature_name(info.path), anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type),
                  float(m.value), float(m.threshold), class_name)
            for info in anomalies.drift_skew_info for m in info.drift_measurements]


def to_json(result: Result, spec: DataValidationSpec, previous_version: Optional[str], verdict: str) -> Dict:
    """What the report and the run summary show (data_validation.json)."""
    return {
        'mode': spec.mode,
        'verdict': verdict,
        'previous_run_statistics': previous_version,
        'thresholds': spec.drift.model_dump(),
        'counts': result.counts,
        'previous_counts': result.previous_counts,
        'findings': [dataclasses.asdict(f) | {'message': f.message()} for f in result.findings],
        'drift': [dataclasses.asdict(d) for d in result.drift],
        'not_measured': result.not_measured,
    }
