"""Makes the Trainer module importable by its path in the Kubeflow image (`run_fn`).

TFX leaves `__init__.py` out of the module-file wheel it builds for local runs.
"""
