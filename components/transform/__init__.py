"""Makes the Transform module importable by its path in the Kubeflow image (`preprocessing_fn`).

TFX leaves `__init__.py` out of the module-file wheel it builds for local runs.
"""
