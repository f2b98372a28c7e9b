"""GPU memory for steps that share a node: taken as needed, not all at once.

TensorFlow maps nearly all the memory of every GPU it can see the first time it uses one, so
a second TensorFlow process on the same GPU fails to allocate (tensorflow/tfx#3343: Transform
and the Evaluator, whose Beam workers each load TensorFlow). TF_FORCE_GPU_ALLOW_GROWTH=true,
which TensorFlow's GPU allocator reads when it creates a GPU device, makes the whole process
allocate as it goes. As an environment variable it reaches what a Python call could not: Beam's
worker processes inherit it, and TFX's own executors (Transform, StatisticsGen, Evaluator) need
no code of ours to run first. A value already set (`false`, say) is left alone.

Locally every component runs in the pipeline's process (pipeline/local_runner.py sets it
there); on Kubeflow each runs in a container of its own, and kubeflow/runner.py sets it on every
step but the Trainer, which is given its GPUs to itself and keeps TensorFlow's default.
"""
import os
from typing import Dict

GROWTH_ENV = 'TF_FORCE_GPU_ALLOW_GROWTH'


def growth_environment() -> Dict[str, str]:
    return {GROWTH_ENV: 'true'}


def grow_as_needed() -> None:
    """For this process and its children; call it before TensorFlow first touches a GPU."""
    for key, value in growth_environment().items():
        os.environ.setdefault(key, value)
