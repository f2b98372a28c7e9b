"""The layout's rule: dependencies point down. Components never import the pipeline's assembly."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_component_imports_pipeline_or_kubeflow():
    offenders = sorted(f'{path.relative_to(REPO)}: {module}'
                       for path in (REPO / 'components').rglob('*.py')
                       for module in _imported_modules(path)
                       if module.split('.')[0] in ('pipeline', 'kubeflow', 'bench', 'tests'))
    assert offenders == []


def test_configuration_loads_without_tensorflow():
    """Runs set KERAS_HOME from the config before TensorFlow loads (Keras writes there at import)."""
    code = ('import sys; import pipeline.config as c; c.configured_output_dir(); '
            'assert "tensorflow" not in sys.modules, "pipeline.config imported TensorFlow"')
    subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, timeout=120)
