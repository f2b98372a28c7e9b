"""Writes a benchmark's result as a Markdown file: what ran, where, when, and a table."""
from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from pathlib import Path
from typing import Sequence

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def write_table(name: str, title: str, description: str, header: Sequence[str],
                rows: Sequence[Sequence[str]]) -> Path:
    """bench/results/<name>.md with the exact command, date, commit and machine."""
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=RESULTS_DIR.parent).stdout.strip() or 'unknown'
    module = 'bench.' + Path(sys.argv[0]).stem if sys.argv and sys.argv[0].endswith('.py') else f'bench.{name}'
    command = 'python -m ' + ' '.join([module] + sys.argv[1:])
    lines = [f'# {title}', '',
             f'`{command}` on {datetime.date.today()}, commit {commit}, {platform.machine()}, '
             f'{_cores()} cores. {description}', '',
             '| ' + ' | '.join(header) + ' |',
             '| ' + ' | '.join('---' for _ in header) + ' |']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f'{name}.md'
    path.write_text('\n'.join(lines) + '\n')
    print(f'wrote {path}')
    return path


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0))
