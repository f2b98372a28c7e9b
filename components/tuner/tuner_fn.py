"""The Tuner's `tuner_fn`: TFX's Tuner component calls it and runs the search it returns.

Its custom_config is the Trainer's (the training spec and the code version) plus the tuning
spec under `tuning`, so the trials build, train and validate exactly what the Trainer will.
TFX then writes the best trial's hyper-parameters (KerasTuner's HyperParameters config; the
Trainer reads `values`: learning_rate, dropout, head_l2, hidden_units, head, fine_tune_at,
fine_tune_learning_rate, whichever were searched) and every completed trial to
`tuner_results.json` (trial_id, score, stage and the values).
"""
from __future__ import annotations

from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from components.trainer.spec import TrainingSpec
from components.tuner.spec import CUSTOM_CONFIG_KEY, TuningSpec
from components.tuner.tuner import TransferLearningTuner, default_directory


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    # TFX's Trainer executor fills the deprecated names the Trainer's code reads
    # (transform_output, schema_file); its Tuner executor does not.
    fn_args.transform_output = fn_args.transform_output or fn_args.transform_graph_path
    fn_args.schema_file = fn_args.schema_file or fn_args.schema_path
    config = fn_args.custom_config
    spec = TrainingSpec(**{key: config[key] for key in TrainingSpec.model_fields})
    tuning = TuningSpec(**config[CUSTOM_CONFIG_KEY])
    tuner = TransferLearningTuner(fn_args, spec, tuning, directory=default_directory(fn_args))
    # The tuner reads the data from fn_args itself (features once, then every trial).
    return TunerFnResult(tuner=tuner, fit_kwargs={})
