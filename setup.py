"""Image-classification transfer learning as a TFX pipeline.

Install with the pinned TFX 1.16 stack (tfx 1.16 declares Python < 3.11, although all of its
dependencies have Python 3.11 wheels):

    pip install --ignore-requires-python -c constraints.txt -e '.[test,kubeflow]'
"""
from setuptools import find_packages, setup

setup(
    name='tfx-image-transfer-learning',
    version='0.1.0',
    description='A TFX pipeline for image-classification transfer learning',
    packages=find_packages(include=['pipeline', 'pipeline.*', 'components', 'components.*',
                                    'kubeflow', 'kubeflow.*']),
    package_data={'pipeline': ['config.yaml'], 'components.report': ['templates/*.j2']},
    python_requires='>=3.9',
    install_requires=[
        'tfx==1.16.0',
        'tf-keras>=2.16,<2.17',
        'tensorflow-transform',
        'tensorflow-model-analysis',
        'pydantic>=2',
        'pyyaml',
        'pillow',
        'matplotlib',
    ],
    extras_require={
        'test': ['pytest', 'moto[server]'],
        # bench/ samples the memory of the pipeline process and its children.
        'bench': ['psutil'],
        # Compiling for and scheduling on Kubeflow Pipelines v2 (python -m kubeflow.runner / .schedule),
        # its Kubernetes platform config, and running the spec locally with kfp.local in Docker.
        'kubeflow': ['kfp==2.13.0', 'kfp-pipeline-spec==0.6.0', 'kfp-kubernetes==1.5.0', 'docker>=7'],
        # s3:// paths (MinIO, Kubeflow's own store): tensorflow-io registers S3 with tf.io.gfile,
        # Beam's S3 file system uses boto3.
        's3': ['tensorflow-io==0.37.1', 'boto3'],
    },
)
