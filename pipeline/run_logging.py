"""A readable console for pipeline runs, with the full log kept in a file.

A plain TFX run prints thousands of lines (every artifact, every Beam stage, every
deprecation warning). The console shows which component runs or is reused from cache, what
our own components report (ingestion summary, training progress, the gate's verdict) and any
error; everything, at INFO level, also goes to `output_dir/logs/run-<time>.log`.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

# TensorFlow's C++ logging starts before Python logging can be configured; keep it to errors
# that matter unless the user chose otherwise. Must run before TensorFlow is imported.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# google-api-core warns at import time that Python 3.11 support ends in 2027.
warnings.filterwarnings('ignore', message='You are using a Python version', category=FutureWarning)

_OUR_LOGGERS = ('pipeline', 'components', '__main__')
_TFX_PROGRESS = re.compile(r'^(Component \S+ is (running|finished)\.|A cached execution \d+ is used\.)')


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name.split('.')[0] in _OUR_LOGGERS:
            return True
        if record.name == 'absl' and _TFX_PROGRESS.match(str(record.msg)):
            record.msg = '  ' + str(record.msg).replace('A cached execution', 'reused cached execution')
            return True
        return False


def configure(log_dir: str, verbose: bool = False) -> Path:
    """Routes all Python, absl and warnings logging; returns the path of the full log file."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log_file = Path(log_dir) / time.strftime('run-%Y%m%d-%H%M%S.log')
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO)

    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    root.addHandler(file_handler)

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
    if not verbose:
        console.addFilter(_ConsoleFilter())
    root.addHandler(console)

    # TensorFlow gives its logger a console handler of its own when it is imported first.
    tensorflow_logger = logging.getLogger('tensorflow')
    for handler in list(tensorflow_logger.handlers):
        tensorflow_logger.removeHandler(handler)
    tensorflow_logger.propagate = True

    import absl.logging
    absl.logging.set_verbosity(absl.logging.INFO)
    absl.logging.get_absl_handler().setLevel(logging.CRITICAL + 1)  # root's handlers do the work
    logging.captureWarnings(True)
    return log_file
