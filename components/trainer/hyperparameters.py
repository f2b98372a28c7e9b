"""The Tuner's best hyperparameters, as keys of the Trainer's spec.

TFX hands the Trainer the KerasTuner HyperParameters config the Tuner wrote
(`fn_args.hyperparameters`, {'space': [...], 'values': {...}}); its values are named after
the config keys they set, so a tuned run equals a run with those keys in the config. A
tuned key counts as set: `recipe: auto` does not choose it again.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from components.trainer.spec import TrainingSpec

# Names the Tuner may write; anything else is an error (a Tuner and Trainer out of step).
TUNABLE = ('learning_rate', 'dropout', 'head_l2', 'hidden_units', 'head', 'fine_tune_at', 'fine_tune_learning_rate')


def values_of(hyperparameters: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The values of a HyperParameters config (or {} without a Tuner)."""
    if not hyperparameters:
        return {}
    values = hyperparameters.get('values', hyperparameters)
    unknown = sorted(set(values) - set(TUNABLE))
    if unknown:
        raise ValueError(f'the Tuner\'s best hyperparameters name {", ".join(unknown)}, which the Trainer does '
                         f'not know (it takes {", ".join(TUNABLE)})')
    return dict(values)


def apply(spec: TrainingSpec, values: Dict[str, Any]) -> TrainingSpec:
    """spec with the tuned values set, validated as if they had been in the config.

    hidden_units is one integer for the Tuner (0: no hidden layer, n: one of n units);
    fine_tune_at applies to every backbone.
    """
    if not values:
        return spec
    update = dict(values)
    if 'hidden_units' in update:
        units = int(update['hidden_units'])
        update['hidden_units'] = [units] if units else []
    fine_tune_at = update.pop('fine_tune_at', None)
    data = spec.model_dump()
    data.update(update)
    if fine_tune_at is not None:
        data['backbones'] = [dict(backbone, fine_tune_at=fine_tune_at) for backbone in data['backbones']]
    return TrainingSpec(**data)
