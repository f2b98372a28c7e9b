"""The Evaluator's configuration: what is measured on the test split, and the gate.

Gated: accuracy on the overall slice (a lower bound and no regression against the last
blessed model). Reported, not gated: micro-averaged one-vs-rest AUC, precision and recall
(TFMA's multi-class default, which also covers two classes since the model always outputs
one probability per class), and every metric per class (slices on the label).

Thresholds sit in `per_slice_thresholds` for the overall slice only: a plain
`MetricConfig.threshold` would apply to every slice, so one small class could block a model.
"""
import tensorflow_model_analysis as tfma

from components.features import LABEL_KEY
from components.trainer.serving import EXAMPLES_SIGNATURE, PROBABILITIES_KEY

ACCURACY_METRIC = 'sparse_categorical_accuracy'
REPORTED_METRICS = ('ExampleCount', 'SparseCategoricalAccuracy', 'AUC', 'Precision', 'Recall')
# TFMA compares "greater than"; a tiny epsilon turns "may not drop by more than x" into that.
_EPSILON = 1e-10


def eval_config(min_accuracy: float, max_accuracy_drop: float) -> tfma.EvalConfig:
    """Accuracy >= min_accuracy, and >= the last blessed model's accuracy - max_accuracy_drop.

    The change threshold is skipped by TFMA when there is no blessed model yet (first run).
    """
    overall = tfma.SlicingSpec()
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
        slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name='ExampleCount'),
                tfma.MetricConfig(
                    class_name='SparseCategoricalAccuracy',
                    per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                        slicing_specs=[overall], threshold=accuracy_threshold)]),
            ]),
            tfma.MetricsSpec(
                metrics=[tfma.MetricConfig(class_name=name) for name in ('AUC', 'Precision', 'Recall')],
                aggregate=tfma.AggregationOptions(micro_average=True)),
        ],
    )
