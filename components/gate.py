"""The Evaluator's gate: what a model must achieve on the test split to be pushed.

Thresholds sit in `per_slice_thresholds` for the overall slice only: a plain
`MetricConfig.threshold` would apply to every slice, so one small slice could block a model.
"""
import tensorflow_model_analysis as tfma

from components.features import LABEL_KEY
from components.serving import EXAMPLES_SIGNATURE, PROBABILITIES_KEY

ACCURACY_METRIC = 'sparse_categorical_accuracy'
# TFMA compares "greater than"; a tiny epsilon turns "may not drop by more than x" into that.
_EPSILON = 1e-10


def eval_config(min_accuracy: float, max_accuracy_drop: float) -> tfma.EvalConfig:
    """Accuracy >= min_accuracy, and >= the last blessed model's accuracy - max_accuracy_drop.

    The change threshold is skipped by TFMA when there is no blessed model yet (first run).
    """
    overall = [tfma.SlicingSpec()]
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -max_accuracy_drop - _EPSILON}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=EXAMPLES_SIGNATURE,
            label_key=LABEL_KEY,
            prediction_key=PROBABILITIES_KEY,
        )],
        slicing_specs=overall,
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name='ExampleCount'),
            tfma.MetricConfig(
                class_name='SparseCategoricalAccuracy',
                per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                    slicing_specs=overall, threshold=accuracy_threshold)]),
        ])],
    )
