"""Flink's jars and Beam's Flink job server: fetched on first use, cached outside the repository.

- Flink: PyPI's `apache-flink-libraries` sdist ships the binary distribution's jars (deps/lib);
  only flink-dist, log4j and bash-java-utils are kept (the sdist is 231 MB, they ~130 MB).
- The job server: Beam's own jar is not served by the Maven Central mirror reachable here, so
  Maven assembles an equivalent from the artifacts that are (job_server/pom.xml says which).

Both land in $IMAGE_TL_CACHE (default ~/.cache/image-transfer-learning), under names carrying
their versions, written under a temporary name and renamed: an interrupted download never
leaves a half-written file under the cached name.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

FLINK_VERSION = '1.18.1'
BEAM_VERSION = '2.59.0'
POM = Path(__file__).resolve().parent / 'job_server' / 'pom.xml'
# The distribution's lib/ files a session cluster needs (the rest are Table API and connectors).
_FLINK_FILES = ('deps/lib/flink-dist-', 'deps/lib/log4j-', 'deps/bin/bash-java-utils.jar')
DOWNLOAD_TIMEOUT = 1800


class JarsUnavailable(RuntimeError):
    """A jar could not be fetched or built; the message says why and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get('IMAGE_TL_CACHE') or Path.home() / '.cache' / 'image-transfer-learning')


def flink_lib(log: Callable[[str], None] = print) -> Path:
    """The folder with flink-dist, log4j and bash-java-utils jars of FLINK_VERSION."""
    target = cache_dir() / f'flink-{FLINK_VERSION}' / 'lib'
    if (target / f'flink-dist-{FLINK_VERSION}.jar').is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f'Downloading Flink {FLINK_VERSION} (PyPI apache-flink-libraries, 231 MB) into {target}')
    with tempfile.TemporaryDirectory(dir=target.parent, prefix='.download-') as work:
        _run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
              '--dest', work, f'apache-flink-libraries=={FLINK_VERSION}'],
             f'pip could not download apache-flink-libraries=={FLINK_VERSION} from PyPI')
        archive = next(Path(work).glob('apache-flink-libraries-*.tar.gz'))
        lib = Path(work) / 'lib'
        lib.mkdir()
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                inside = member.name.split('/', 1)[-1]
                if member.isfile() and inside.startswith(_FLINK_FILES):
                    with sdist.extractfile(member) as source, open(lib / Path(inside).name, 'wb') as out:
                        shutil.copyfileobj(source, out)
        if not (lib / f'flink-dist-{FLINK_VERSION}.jar').is_file():
            raise JarsUnavailable(f'{archive.name} has no deps/lib/flink-dist-{FLINK_VERSION}.jar')
        os.replace(lib, target)
    return target


def job_server_jar(log: Callable[[str], None] = print) -> Path:
    """Beam's Flink job server (FlinkJobServerDriver and everything it needs) as one jar.

    Its cached name carries a hash of job_server/pom.xml: a changed pom builds a new jar.
    """
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    target = cache_dir() / f'beam-flink-job-server-{BEAM_VERSION}-flink-{FLINK_VERSION}-{pom_hash}.jar'
    if target.is_file():
        return target
    for tool, package in (('java', 'openjdk-17-jre-headless'), ('mvn', 'maven')):
        if shutil.which(tool) is None:
            raise JarsUnavailable(f'{tool} is not installed; it is needed once to assemble Beam\'s Flink job '
                                  f'server from Maven Central (Debian: apt-get install {package})')
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f'Assembling Beam {BEAM_VERSION}\'s Flink job server with Maven into {target} (first use only)')
    with tempfile.TemporaryDirectory(dir=target.parent, prefix='.job-server-') as work:
        shutil.copy(POM, Path(work) / 'pom.xml')
        # A private local repository, removed afterwards: the jar holds everything it needs.
        _run(['mvn', '--batch-mode', '--quiet', f'-Dmaven.repo.local={work}/repository', f'-Dbeam.version={BEAM_VERSION}',
              f'-Dflink.version={FLINK_VERSION}', 'package'],
             'Maven could not assemble the job server from Maven Central', cwd=work)
        built = Path(work) / 'target' / f'beam-flink-job-server-{BEAM_VERSION}-flink-{FLINK_VERSION}.jar'
        os.replace(built, target)
    return target


def _run(command, failure: str, cwd=None) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise JarsUnavailable(f'{failure}: no answer in {DOWNLOAD_TIMEOUT} s') from None
    if result.returncode:
        raise JarsUnavailable(f'{failure}:\n{(result.stdout + result.stderr)[-3000:]}')
