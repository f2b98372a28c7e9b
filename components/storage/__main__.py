"""`python -m components.storage install`: load s3_startup.py in every process of this Python.

Writes image_pipeline_s3.pth into site-packages (the Makefile and the Dockerfile run this).
`python -m components.storage check` says whether it is installed.
"""
import argparse
import sys
import sysconfig
from pathlib import Path

PTH_NAME = 'image_pipeline_s3.pth'
PTH_LINE = 'import components.storage.s3_startup\n'


def pth_path() -> Path:
    return Path(sysconfig.get_paths()['purelib']) / PTH_NAME


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=['install', 'check'])
    args = parser.parse_args(argv)
    path = pth_path()
    if args.action == 'install':
        path.write_text(PTH_LINE)
        print(f'wrote {path}')
        return 0
    installed = path.exists() and path.read_text() == PTH_LINE
    print(f'{path}: {"installed" if installed else "missing"}')
    return 0 if installed else 1


if __name__ == '__main__':
    sys.exit(main())
