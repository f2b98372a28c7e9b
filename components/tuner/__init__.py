"""The Tuner: `tuner_fn` (tuner_fn.py) for TFX's Tuner component, the KerasTuner tuner it returns
(tuner.py: head trials on backbone features computed once, then fine-tuning trials), the two-stage
oracle and search space (oracle.py) and the spec it is given (spec.py)."""
