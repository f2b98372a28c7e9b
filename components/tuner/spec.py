"""What the Tuner receives besides the Trainer's own spec: how long to search, and where.

The config's `tuning:` section (absent or null: no Tuner). Each search-space key holds a range
`[min, max]` or a list of choices; null leaves that hyper-parameter out of the search, so the
Trainer keeps its configured value and the Tuner's result does not name it. Importing this
module must not import TensorFlow (pipeline.config reads it before TensorFlow loads).
"""
from __future__ import annotations

from typing import List, Literal, Optional, Tuple

from pydantic import Field, field_validator, model_validator

from components.strict_spec import StrictSpec

# The key of the Tuner's custom_config that holds this spec (the rest is the Trainer's).
CUSTOM_CONFIG_KEY = 'tuning'
# Every trial's values (and tuner_results row) carry its stage under STAGE; not a hyper-parameter.
STAGE = 'stage'
HEAD_STAGE, FINE_TUNE_STAGE = 'head', 'fine_tune'
HeadKind = Literal['gap', 'max', 'flatten']
# The names the Trainer accepts from the Tuner (components/trainer/hyperparameters.py).
HEAD_HYPERPARAMETERS = ('learning_rate', 'dropout', 'head_l2', 'hidden_units', 'head')
FINE_TUNE_HYPERPARAMETERS = ('fine_tune_at', 'fine_tune_learning_rate')


def _range(value: Optional[Tuple[float, float]], low: float, high: float,
           low_open: bool, high_open: bool) -> Optional[Tuple[float, float]]:
    if value is None:
        return None
    first, last = value
    below = first <= low if low_open else first < low
    above = last >= high if high_open else last > high
    if below or above or first >= last:
        bounds = f'{"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
        raise ValueError(f'needs [min, max] with min < max, both in {bounds}; got {list(value)}')
    return value


class TuningSpec(StrictSpec):
    """The Tuner's search: head trials on cached backbone features, then fine-tuning trials."""

    # Stage 1: trials of the head alone, trained on the frozen backbone's features of the train
    # split (computed once), each until its validation loss stops improving.
    head_trials: int = Field(12, ge=1)
    max_head_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1)
    # Stage 2 (0: none): trials of fine_tune_at and fine_tune_learning_rate with the best head
    # values fixed; each trains that head on features, then fine-tunes the whole classifier on
    # the images for fine_tune_trial_epochs epochs.
    fine_tune_trials: int = Field(0, ge=0)
    fine_tune_trial_epochs: int = Field(2, ge=1)
    # bayesian: KerasTuner's Gaussian-process oracle after initial_random_trials random ones
    # (default: half the head trials, at least 3); random: random search.
    search: Literal['bayesian', 'random'] = 'bayesian'
    initial_random_trials: Optional[int] = Field(None, ge=1)
    # The oracle's seed; unset: the training seed.
    seed: Optional[int] = None

    # The search space. Ranges are [min, max]; learning rates are sampled log-uniformly.
    learning_rate: Optional[Tuple[float, float]] = (1e-4, 3e-2)
    dropout: Optional[Tuple[float, float]] = (0.0, 0.5)
    head_l2: Optional[List[float]] = Field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3])
    hidden_units: Optional[List[int]] = Field(default_factory=lambda: [0, 128, 512])
    # Searched only when every backbone outputs a feature map. flatten's features are h x w
    # times larger than gap's (62,720 against 1,280 for MobileNetV2 at 224 px), so it is not
    # searched unless listed; the cached features must fit in max_feature_gb.
    head: Optional[List[HeadKind]] = Field(default_factory=lambda: ['gap', 'max'])
    fine_tune_at: Optional[Tuple[float, float]] = (0.5, 0.9)
    fine_tune_learning_rate: Optional[Tuple[float, float]] = (1e-6, 1e-3)
    # Memory the cached features of the train and eval splits may take, every head kind together.
    max_feature_gb: float = Field(2.0, gt=0)

    @field_validator('learning_rate', 'fine_tune_learning_rate')
    @classmethod
    def _learning_rate_range(cls, value):
        return _range(value, 0.0, 10.0, low_open=True, high_open=False)

    @field_validator('dropout')
    @classmethod
    def _dropout_range(cls, value):
        return _range(value, 0.0, 1.0, low_open=False, high_open=True)

    @field_validator('fine_tune_at')
    @classmethod
    def _fraction_range(cls, value):
        return _range(value, 0.0, 1.0, low_open=True, high_open=True)

    @field_validator('head_l2', 'hidden_units', 'head')
    @classmethod
    def _choices(cls, value, info):
        if value is None:
            return None
        if not value or len(set(value)) != len(value):
            raise ValueError(f'needs a list of distinct choices (null: not searched); got {value}')
        if info.field_name == 'head_l2' and any(choice < 0 for choice in value):
            raise ValueError(f'penalties must be >= 0; got {value}')
        if info.field_name == 'hidden_units' and any(choice < 0 for choice in value):
            raise ValueError(f'0 (no hidden layer) or a number of units; got {value}')
        return value

    @model_validator(mode='after')
    def _something_to_search(self) -> 'TuningSpec':
        if not self.head_hyperparameters():
            raise ValueError('every head hyper-parameter (' + ', '.join(HEAD_HYPERPARAMETERS) +
                             ') is null: nothing to search')
        if self.fine_tune_trials and not self.fine_tune_hyperparameters():
            raise ValueError('fine_tune_trials is set but fine_tune_at and fine_tune_learning_rate are both null')
        return self

    def head_hyperparameters(self) -> List[str]:
        return [name for name in HEAD_HYPERPARAMETERS if getattr(self, name) is not None]

    def fine_tune_hyperparameters(self) -> List[str]:
        return [name for name in FINE_TUNE_HYPERPARAMETERS if getattr(self, name) is not None]

    def effective_initial_random_trials(self) -> int:
        if self.search == 'random':
            return self.head_trials
        return min(self.head_trials, self.initial_random_trials or max(3, self.head_trials // 2))
