"""Compilation of the same pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner).

Not built yet: the package exists so the distribution's layout is stable.
"""
