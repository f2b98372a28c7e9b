"""Where the latest run's report page is, and, with --open, the page in a web browser.

    python -m pipeline.report [--config FILE] [--output-dir DIR] [--open]

ModelReport writes one self-contained `report.html` per run (components/report/html.py) into
its artifact folder, whose path has an execution id in it; this finds the latest run's from ML
Metadata, as `python -m pipeline.run_summary` does, and prints its path.
"""
from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path
from typing import Optional, Sequence

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import ConfigError, add_config_arguments, configured_output_dir, load_config
from pipeline.local_runner import keep_tool_files_out_of_home

REPORT_HTML = 'report.html'  # components.report.html.REPORT_HTML, without importing TFX for it


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--output-dir', help="the runs' output_dir, if not the config's (same as --set output_dir=DIR)")
    parser.add_argument('--open', action='store_true', help='open the page in the default web browser')
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f'output_dir={args.output_dir}'] if args.output_dir else [])
    output_dir = configured_output_dir(args.config, overrides)
    if output_dir and '://' not in output_dir and not os.path.isdir(output_dir):
        print(f'No run here: {output_dir} does not exist', file=sys.stderr)
        return 1
    keep_tool_files_out_of_home(args.config, overrides)  # reading ML Metadata imports TensorFlow
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2

    from pipeline import run_summary
    summary = run_summary.latest_run(config)
    if summary is None:
        print(f'No run of {config.pipeline_name} recorded in {config.metadata_path}', file=sys.stderr)
        return 1
    if not summary.report_uri:
        print(f'The latest run ({summary.run_id}) has no report: ModelReport did not run '
              f'(python -m pipeline.run_summary shows which step stopped it).', file=sys.stderr)
        return 1
    page = f'{summary.report_uri.rstrip("/")}/{REPORT_HTML}'
    local = '://' not in page
    if local and not Path(page).exists():
        print(f'The latest run ({summary.run_id}) wrote no {REPORT_HTML} (made by an older version); '
              f'its summary is {summary.report_uri}/summary.md', file=sys.stderr)
        return 1
    print(str(Path(page).resolve()) if local else page)
    if args.open:
        if not local:
            print('The page is not on this machine: copy it here to open it.', file=sys.stderr)
            return 1
        if not webbrowser.open(Path(page).resolve().as_uri()):
            print('No web browser could be started here; open the file above in one.', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
