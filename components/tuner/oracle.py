"""The search space and the two-stage oracle: head trials first, then fine-tuning trials.

One KerasTuner oracle holds every trial, because TFX's Tuner writes its results from one
oracle: `best_hyperparameters` is `tuner.get_best_hyperparameters()[0]` and `tuner_results`
lists `tuner.oracle.get_best_trials(max_trials)`.

- Stage 1, `head_trials` trials over the head's space: KerasTuner's Bayesian optimisation (a
  Gaussian process after some random trials), or random search.
- Stage 2, up to `fine_tune_trials` trials: the best head trial's values, fixed, plus random
  (seeded) values of `fine_tune_at` and `fine_tune_learning_rate`. A handful of trials is too
  few for a Gaussian process to learn from.

Each trial's values carry `stage` ('head' or 'fine_tune'), so TFX's `tuner_results` rows say
which stage a trial belongs to; it is not a hyper-parameter (not in the search space) and
`TransferLearningTuner.get_best_hyperparameters` leaves it out. Scores of the two stages
measure different models (the head on features, the fine-tuned classifier), so the best trials
are those of the last stage: with fine-tuning trials, the best of them, whatever the head
trials scored.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module

from components.tuner.spec import FINE_TUNE_STAGE, HEAD_STAGE, STAGE, TuningSpec

OBJECTIVE = keras_tuner.Objective('val_loss', direction='min')
_MAX_COLLISIONS = 20


def head_space(tuning: TuningSpec, search_head_kind: bool) -> keras_tuner.HyperParameters:
    """The head's hyper-parameters; `head` (the pooling) only when every backbone outputs a feature map."""
    hp = keras_tuner.HyperParameters()
    if tuning.learning_rate:
        hp.Float('learning_rate', *tuning.learning_rate, sampling='log')
    if tuning.dropout:
        hp.Float('dropout', *tuning.dropout)
    if tuning.head_l2:
        hp.Choice('head_l2', [float(value) for value in tuning.head_l2])
    if tuning.hidden_units:
        hp.Choice('hidden_units', tuning.hidden_units)
    if tuning.head and search_head_kind:
        hp.Choice('head', tuning.head)
    return hp


def fine_tune_space(tuning: TuningSpec) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    if tuning.fine_tune_at:
        hp.Float('fine_tune_at', *tuning.fine_tune_at)
    if tuning.fine_tune_learning_rate:
        hp.Float('fine_tune_learning_rate', *tuning.fine_tune_learning_rate, sampling='log')
    return hp


def _plain(value):
    """numpy scalars (the Gaussian process' suggestions) as Python values, for JSON and the Trainer."""
    return value.item() if isinstance(value, np.generic) else value


class StagedOracle(keras_tuner.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation (or random search) of the head, then random search of fine-tuning."""

    def __init__(self, tuning: TuningSpec, head: keras_tuner.HyperParameters,
                 fine_tune: Optional[keras_tuner.HyperParameters], seed: int):
        self.head_trials = tuning.head_trials
        self.fine_tune_trials = tuning.fine_tune_trials if fine_tune is not None else 0
        self._fine_tune_space = fine_tune
        self._head_exhausted = False
        super().__init__(
            objective=OBJECTIVE, max_trials=self.head_trials + self.fine_tune_trials,
            num_initial_points=tuning.effective_initial_random_trials(), hyperparameters=head,
            allow_new_entries=False, tune_new_entries=False,
            # KerasTuner takes a seed of 0 for "no seed" and draws one at random.
            seed=seed if seed else 1)

    @property
    def final_stage(self) -> str:
        return FINE_TUNE_STAGE if self.fine_tune_trials else HEAD_STAGE

    def trials_of(self, stage: str) -> List[trial_module.Trial]:
        return [t for t in self.trials.values() if t.hyperparameters.values.get(STAGE) == stage]

    def populate_space(self, trial_id: str) -> Dict:
        if not self._head_exhausted and len(self.trials_of(HEAD_STAGE)) < self.head_trials:
            response = super().populate_space(trial_id)
            if response['status'] == trial_module.TrialStatus.RUNNING:
                values = {name: _plain(value) for name, value in response['values'].items()}
                return {'status': response['status'], 'values': {**values, STAGE: HEAD_STAGE}}
            self._head_exhausted = True  # every combination of a small discrete space was tried
        if len(self.trials_of(FINE_TUNE_STAGE)) >= self.fine_tune_trials:
            return {'status': trial_module.TrialStatus.STOPPED, 'values': None}
        return self._fine_tune_values()

    def _fine_tune_values(self) -> Dict:
        best = self.best_trial_of(HEAD_STAGE)
        if best is None:
            raise RuntimeError('No head trial completed, so there are no head values to fine-tune with. '
                               'The last one failed with:\n' + _last_message(self.trials_of(HEAD_STAGE)))
        known = {hp.name for hp in self.hyperparameters.space}
        # From now on the trials' search space includes fine-tuning (the Gaussian process, which
        # would otherwise count its dimensions, has finished).
        self.hyperparameters.merge([hp for hp in self._fine_tune_space.space if hp.name not in known])
        fixed = {name: value for name, value in best.hyperparameters.values.items() if name != STAGE}
        for _ in range(_MAX_COLLISIONS):
            values = dict(fixed)
            for hp in self._fine_tune_space.space:
                value = hp.random_sample(self._seed_state)
                self._seed_state += 1
                values[hp.name] = round(value, 4) if hp.name == 'fine_tune_at' else _plain(value)
            if not self._duplicate(values):
                return {'status': trial_module.TrialStatus.RUNNING, 'values': {**values, STAGE: FINE_TUNE_STAGE}}
        return {'status': trial_module.TrialStatus.STOPPED, 'values': None}

    def best_trial_of(self, stage: str) -> Optional[trial_module.Trial]:
        completed = [t for t in self.trials_of(stage) if t.status == trial_module.TrialStatus.COMPLETED]
        return min(completed, key=lambda t: t.score) if completed else None

    def get_best_trials(self, num_trials: int = 1) -> List[trial_module.Trial]:
        """Completed trials of the last stage by score, then the others by score, then the rest."""
        completed = [t for t in self.trials.values() if t.status == trial_module.TrialStatus.COMPLETED]
        ranked = sorted(completed, key=lambda t: (t.hyperparameters.values.get(STAGE) != self.final_stage, t.score))
        ranked += [t for t in self.trials.values() if t.status != trial_module.TrialStatus.COMPLETED]
        return ranked[:num_trials]

    def _compute_values_hash(self, values: Dict) -> str:
        """Trials are duplicates when their hyper-parameters are, whatever their stage."""
        return super()._compute_values_hash({name: value for name, value in values.items() if name != STAGE})


def _last_message(trials: List[trial_module.Trial]) -> str:
    messages = [t.message for t in trials if t.message]
    return messages[-1] if messages else '(no message)'
