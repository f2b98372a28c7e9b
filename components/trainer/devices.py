"""Which devices the Trainer trains on, and in which precision (DevicesSpec's keys).

Distribution: `auto` mirrors the model on every visible GPU when there are two or more
(tf.distribute.MirroredStrategy: one replica per GPU, gradients summed across them at every
step) and otherwise keeps TensorFlow's default strategy, one device; `mirrored` mirrors even on
one device, over the logical CPU devices when there is no GPU (which is how the tests get two
replicas on a CPU); `none` keeps the default.

`batch_size` stays the global batch: at every step each replica takes its share of it, so
the learning rates need no scaling. Keras averages the loss over the global batch, so a
step on N replicas is the step one device would take on the same batch.

Precision: `auto` trains in mixed float16 (float32 variables, float16 computations, and Keras
wraps the optimizer in a LossScaleOptimizer) on GPUs of compute capability 7.0 or more, whose
Tensor Cores run it, and in float32 elsewhere; `float16` and `bfloat16` choose that mixed
policy anywhere; `off` is float32. model.py keeps the output layer in float32, so logits and
losses are float32 whatever the policy (and image_trainer.py exports a float32 copy).

Keras' policy is global to the process, and locally the Trainer shares its process with the
other components: `training_devices` sets it for training and then puts the previous one back.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from components.trainer.spec import DevicesSpec, TrainingSpec

logger = logging.getLogger(__name__)

MIXED_POLICIES = {'float16': 'mixed_float16', 'bfloat16': 'mixed_bfloat16', 'off': 'float32'}
# The first NVIDIA architecture with Tensor Cores (Volta: V100; then T4, A100, L4, H100).
TENSOR_CORES = (7, 0)
LEARNING_RATE_SCALING = 'none: batch_size is the global batch, split between the replicas'


@dataclasses.dataclass(frozen=True)
class Gpu:
    """A GPU as TensorFlow describes it (model and compute capability, when it says)."""
    name: str
    model: str = ''
    compute_capability: Optional[Tuple[int, int]] = None

    def describe(self) -> str:
        capability = '.'.join(map(str, self.compute_capability)) if self.compute_capability else 'unknown'
        return f'{self.model or self.name} (compute capability {capability})'


def visible_gpus() -> List[Gpu]:
    gpus = []
    for device in tf.config.list_physical_devices('GPU'):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get('compute_capability')
        gpus.append(Gpu(device.name, details.get('device_name', ''), tuple(capability) if capability else None))
    return gpus


def mirrored_devices(distribution: str, gpus: Sequence[str], cpus: Sequence[str]) -> Optional[List[str]]:
    """The devices to mirror the model on (logical device names), or None for the default strategy."""
    if distribution == 'none' or (distribution == 'auto' and len(gpus) < 2):
        return None
    return list(gpus or cpus)


def precision_policy(mixed_precision: str, gpus: Sequence[Gpu], random_backbone: bool) -> Tuple[str, str]:
    """(Keras policy name, why)."""
    if mixed_precision != 'auto':
        return MIXED_POLICIES[mixed_precision], f'mixed_precision: {mixed_precision}'
    if not gpus:
        return 'float32', 'mixed_precision: auto without a GPU'
    older = [gpu for gpu in gpus if not gpu.compute_capability or gpu.compute_capability < TENSOR_CORES]
    if older:
        return 'float32', (f'mixed_precision: auto, and {", ".join(gpu.describe() for gpu in older)} is below '
                           f'compute capability 7.0 (no Tensor Cores for float16)')
    if random_backbone:
        return 'float32', ('mixed_precision: auto with weights: none: a random backbone\'s features (around 1e-12) '
                           'underflow in float16')
    return 'mixed_float16', f'mixed_precision: auto on {", ".join(gpu.describe() for gpu in gpus)}'


@dataclasses.dataclass
class TrainingDevices:
    """The strategy and precision policy a training run uses, and why."""
    distribution: str
    strategy: tf.distribute.Strategy
    devices: List[str]
    gpus: List[Gpu]
    policy: str
    policy_reason: str
    jit_compile: bool
    batch_size: int

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def strategy_name(self) -> str:
        return type(self.strategy).__name__ if self.mirrored else 'default'

    @property
    def mirrored(self) -> bool:
        return isinstance(self.strategy, tf.distribute.MirroredStrategy)

    def summary(self) -> Dict[str, Any]:
        """The training summary's `devices`."""
        return {
            'distribution': self.distribution,
            'strategy': self.strategy_name,
            'replicas': self.replicas,
            'devices': self.devices,
            'gpus': [dataclasses.asdict(gpu) for gpu in self.gpus],
            'precision_policy': self.policy,
            'precision_reason': self.policy_reason,
            'jit_compile': self.jit_compile,
            'global_batch_size': self.batch_size,
            'per_replica_batch_size': self.batch_size / self.replicas,
            'learning_rate_scaling': LEARNING_RATE_SCALING,
            'description': self.describe(),
        }

    def describe(self) -> str:
        """One line for people: the summary's, the report's and the log's."""
        names = ', '.join(name.rsplit('/', 1)[-1].removeprefix('device:') for name in self.devices)
        models = '; '.join(gpu.describe() for gpu in (self.gpus if self.mirrored else self.gpus[:1]))
        where = f'{names}; {models}' if models else names
        return (f'{self.strategy_name} strategy, {self.replicas} replica(s) ({where}), '
                f'precision {self.policy}{", XLA" if self.jit_compile else ""}; global batch {self.batch_size}, '
                f'{_per_replica(self.batch_size, self.replicas)} per replica')

    def log(self) -> None:
        logger.info('Training on: %s (batch_size is the global batch, so learning rates are not scaled; '
                    'precision: %s)', self.describe(), self.policy_reason)
        if self.batch_size % self.replicas:
            logger.warning('batch_size %d does not divide evenly between %d replicas: some take one example more',
                           self.batch_size, self.replicas)
        if self.distribution == 'mirrored' and self.replicas == 1:
            logger.warning('distribution: mirrored on one device: MirroredStrategy with a single replica, which '
                           'trains as the default strategy would (no speed-up)')


def _per_replica(batch_size: int, replicas: int) -> str:
    share = batch_size / replicas
    return f'{share:g}' if share == int(share) else f'{share:.1f} on average'


def choose(spec: TrainingSpec) -> TrainingDevices:
    """The strategy and policy for spec on the devices this process sees."""
    gpus = visible_gpus()
    logical_gpus = [d.name for d in tf.config.list_logical_devices('GPU')]
    logical_cpus = [d.name for d in tf.config.list_logical_devices('CPU')]
    mirrored = mirrored_devices(spec.distribution, logical_gpus, logical_cpus)
    if mirrored is None:
        strategy = tf.distribute.get_strategy()
        devices = (logical_gpus or logical_cpus)[:1]
    else:
        strategy = tf.distribute.MirroredStrategy(devices=mirrored)
        devices = list(strategy.extended.worker_devices)
    policy, reason = precision_policy(spec.mixed_precision, gpus, spec.any_random_backbone)
    return TrainingDevices(spec.distribution, strategy, devices, gpus, policy, reason, spec.jit_compile,
                           spec.batch_size)


@contextlib.contextmanager
def training_devices(spec: TrainingSpec) -> Iterator[TrainingDevices]:
    """Within: spec's precision policy is Keras' global policy and its strategy's scope is entered,
    so every model built and compiled inside is mirrored and mixed. The previous policy is put
    back on leaving."""
    chosen = choose(spec)
    chosen.log()
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(chosen.policy)
    try:
        with chosen.strategy.scope():
            yield chosen
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def replica_batches(examples: tf.data.Dataset, batch_size: int, count: int, training: bool) -> tf.data.Dataset:
    """`examples` (one at a time, `count` of them) in batches of which every replica of the
    current strategy gets at least one example.

    tf.distribute splits a batch of batch_size into per-replica batches of batch_size /
    replicas, filled in order, so a last batch of at most batch_size - batch_size // replicas
    leaves the last replica an empty batch (8 in 2: a last batch of 2 goes [2, 0]). TensorFlow's
    kernels do not all take empty batches: on two CPU devices oneDNN's depthwise convolution
    fails ("input depth must be evenly divisible by filter depth: 3 vs 16"), and users report
    empty-replica failures on GPUs (tensorflow/tensorflow#58809). In training that last batch is
    left out (fewer than batch_size examples an epoch, different ones each epoch when
    shuffled); evaluation and prediction need every example, so there the batch size is raised
    until the last batch is large enough.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if not training:
        return examples.batch(inference_batch_size(count, batch_size, replicas))
    batches = examples.batch(batch_size)
    if not _fills_every_replica(count, batch_size, replicas):
        smallest = _smallest_full_batch(batch_size, replicas)
        batches = batches.filter(lambda *example: tf.shape(tf.nest.flatten(example)[0])[0] >= smallest)
    return batches


def _smallest_full_batch(batch_size: int, replicas: int) -> int:
    """The smallest batch that tf.distribute's split of batch_size gives every replica part of."""
    return batch_size - batch_size // replicas + 1 if replicas > 1 else 1


def _fills_every_replica(count: int, batch_size: int, replicas: int) -> bool:
    last = count % batch_size
    return last == 0 or last >= _smallest_full_batch(batch_size, replicas)


def inference_batch_size(count: int, batch_size: int, replicas: int) -> int:
    """The smallest batch size from batch_size on whose batches of `count` examples all give
    every replica an example (at most `count`: one batch of everything)."""
    if 0 < count < replicas:
        raise ValueError(f'a split of {count} example(s) cannot give each of {replicas} replicas one; '
                         f'set distribution: none, or add images to it')
    size = batch_size
    while size < count and not _fills_every_replica(count, size, replicas):
        size += 1
    return size


def on_a_node(spec: DevicesSpec, gpus: int, batch_size: int) -> List[str]:
    """What the Trainer will do on a node where it sees `gpus` GPUs, in words (the Kubeflow
    spec's header): the same decisions as `choose`, made before the pod exists."""
    kind = 'GPU' if gpus else 'CPU'
    mirrored = mirrored_devices(spec.distribution, [f'GPU:{index}' for index in range(gpus)], ['CPU:0'])
    if mirrored is None:
        strategy = (f'distribution: {spec.distribution} -> the default strategy, one device'
                    + (f' (GPU:0 alone trains of {gpus})' if gpus > 1 else f' ({kind}:0)'))
    else:
        strategy = (f'distribution: {spec.distribution} -> MirroredStrategy over {len(mirrored)} {kind}(s), one '
                    f'replica each; batch_size {batch_size} is the global batch, '
                    f'{_per_replica(batch_size, len(mirrored))} per replica per step; learning rates not scaled')
    if spec.mixed_precision != 'auto':
        precision = f'mixed_precision: {spec.mixed_precision} -> {MIXED_POLICIES[spec.mixed_precision]}'
    elif gpus:
        precision = ('mixed_precision: auto -> mixed_float16 if every GPU has compute capability 7.0 or more '
                     '(T4, V100, A100, L4, H100), else float32')
    else:
        precision = 'mixed_precision: auto -> float32 (no GPU)'
    return [strategy, precision + ('; XLA on' if spec.jit_compile else '') +
            '; the output layer and the served probabilities are float32']
