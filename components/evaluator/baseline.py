"""The gate's baseline: the model being served now, found without ML Metadata.

The new model is compared with the model in `serving_dir`, the one users get today, not with
"the last blessed model" of ML Metadata: TFX's Resolver node that looks that up compiles to a
`resolver` executor on Kubeflow, which open-source Kubeflow Pipelines refuses ("resolver
executors not implemented"), and a container step has no access to the cluster's ML Metadata
either. Only blessed models are pushed, so the served model is the last one blessed and pushed
into this serving directory; a model pushed there by hand or by another pipeline is the baseline
too, which is what "never ship a worse model" needs.

`ServedModelBaseline` copies the newest version of `serving_dir` into its Model artifact (or
writes an empty one on the first run), and `BaselineAwareEvaluator` runs TFX's Evaluator with
that baseline, or without one when it is empty: the first run is judged by `min_accuracy` alone.
The baseline step must never be taken from cache (its input is the serving directory's state,
which the cache key cannot see): see `pipeline.tfx_pipeline.UNCACHED_NODES`.
"""
import logging
import os
from typing import Optional

import tensorflow as tf
from tfx.components import Evaluator
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import io_utils, path_utils

logger = logging.getLogger(__name__)

SERVED_VERSION_PROPERTY = 'served_version'
_SAVED_MODEL_FILE = 'saved_model.pb'


def latest_served_version(serving_dir: str) -> Optional[str]:
    """The newest complete model version in serving_dir (Pusher names versions by timestamp)."""
    if not tf.io.gfile.isdir(serving_dir):
        return None
    versions = [name.rstrip('/') for name in tf.io.gfile.listdir(serving_dir)]
    complete = [v for v in versions if v.isdigit() and
                tf.io.gfile.exists(os.path.join(serving_dir, v, _SAVED_MODEL_FILE))]
    return max(complete, key=int) if complete else None


@component
def ServedModelBaseline(  # noqa: N802  (TFX names components like classes)
    serving_dir: Parameter[str],
    baseline: OutputArtifact[standard_artifacts.Model],
) -> None:
    version = latest_served_version(serving_dir)
    baseline.set_string_custom_property(SERVED_VERSION_PROPERTY, version or '')
    if version is None:
        logger.info('No model served in %s yet: the Evaluator judges the new model by min_accuracy alone',
                    serving_dir)
        return
    source = os.path.join(serving_dir, version)
    io_utils.copy_dir(source, path_utils.serving_model_path(baseline.uri))
    logger.info('Baseline: the served model %s', source)


def has_model(model: standard_artifacts.Model) -> bool:
    return tf.io.gfile.exists(os.path.join(path_utils.serving_model_path(model.uri), _SAVED_MODEL_FILE))


class Executor(evaluator_executor.Executor):
    """TFX's Evaluator, without the baseline input when ServedModelBaseline found none."""

    def Do(self, input_dict, output_dict, exec_properties):
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = [model for model in input_dict.get(key, []) if has_model(model)]
        input_dict = dict(input_dict)
        if baselines:
            input_dict[key] = baselines
        else:
            input_dict.pop(key, None)
        super().Do(input_dict, output_dict, exec_properties)


class BaselineAwareEvaluator(Evaluator):
    """TFX's Evaluator, with the executor above; takes the Evaluator's own arguments."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
