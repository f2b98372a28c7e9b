"""The Trainer: `run_fn` (image_trainer.py) and the model code it uses.

spec.py (what it is given), data.py (input), backbones.py (the registry), model.py (base and
head), augmentation.py, recipe.py (the numbers), frozen_bottom.py (phase 2 above the frozen
layers' outputs, computed once), training.py (the two phases, checkpoints), serving.py (the exported
signatures), reports.py (learning curves, confusion matrix, summary).
"""
