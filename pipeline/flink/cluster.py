"""A standalone Flink session cluster on 127.0.0.1, with Beam's job server and SDK harness.

    with LocalFlinkCluster(task_managers=2) as cluster:
        beam_args = cluster.beam_args()    # for the pipeline's beam_args

Every part is a separate process, as on a real cluster: the JobManager, one process per
TaskManager, Beam's Flink job server (which turns a Beam pipeline into a Flink job and submits
it over Flink's REST API), and the Python SDK workers that run the pipeline's Python code:

- harness='process' (default): each TaskManager starts its SDK workers itself, as child
  processes (`pipeline/flink/sdk_worker.py`), one per job.
- harness='external': Beam's worker pool (`apache_beam.runners.worker.worker_pool_main`) is one
  more process, and the TaskManager asks it over gRPC to start the workers. That is the layout
  for Kubernetes, where the pool is a sidecar of each TaskManager pod at localhost:50000. Here it
  takes a single TaskManager: two TaskManagers sharing one pool hang, because each numbers its
  workers from "1-1", the pool keys them by that id, and the first TaskManager to finish has
  the pool stop the other's worker.

Each process runs in a session of its own, so stop() ends it with everything it started (Beam's
SDK workers included). Every wait has a timeout; a part that exits or does not come up in time
stops the whole cluster and raises ClusterError with the end of its log.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from pipeline.flink import jars

HOST = '127.0.0.1'
REPO = Path(__file__).resolve().parents[2]
# The JVM flags Flink 1.18's own scripts pass on Java 17 (env.java.opts.all in its flink-conf.yaml).
JAVA_17_FLAGS = ['--add-exports=java.base/sun.net.util=ALL-UNNAMED',
                 '--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED',
                 '--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED'] + [
    f'--add-opens=java.base/{package}=ALL-UNNAMED'
    for package in ('java.lang', 'java.net', 'java.io', 'java.nio', 'sun.nio.ch', 'java.lang.reflect', 'java.text',
                    'java.time', 'java.util', 'java.util.concurrent', 'java.util.concurrent.atomic',
                    'java.util.concurrent.locks')]
_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = File
appender.file.name = File
appender.file.type = File
appender.file.fileName = ${sys:log.file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n
"""


class ClusterError(RuntimeError):
    """The cluster could not start (or a part of it died); the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def require_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ClusterError(f'port {port} ({what}) is already in use on {HOST}') from None


class LocalFlinkCluster:
    """Starts on __enter__ (or start()), stops everything it started on __exit__ (or stop())."""

    def __init__(self, task_managers: int = 2, slots_per_task_manager: int = 1, harness: str = 'process',
                 work_dir: Optional[str] = None, rest_port: int = 0, startup_timeout: float = 180,
                 log: Callable[[str], None] = print):
        if task_managers < 1 or slots_per_task_manager < 1:
            raise ValueError('task_managers and slots_per_task_manager must be at least 1')
        if harness not in ('external', 'process'):
            raise ValueError(f'harness must be external or process, not {harness!r}')
        if harness == 'external' and task_managers > 1:
            raise ValueError('harness external takes one TaskManager here: TaskManagers sharing one worker pool '
                             'give their SDK workers the same ids, and one stops the other\'s (see this module\'s '
                             'docstring); use harness process')
        self.task_managers, self.slots, self.harness = task_managers, slots_per_task_manager, harness
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix='flink-'))
        self.startup_timeout = startup_timeout
        self._log = log
        self._requested_rest_port = rest_port
        self.ports: Dict[str, int] = {}
        self.processes: Dict[str, subprocess.Popen] = {}
        self.startup_seconds: Optional[float] = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> 'LocalFlinkCluster':
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        started = time.time()
        if shutil.which('java') is None:
            raise ClusterError('java is not installed: Flink and Beam\'s job server need Java 11 or 17 '
                               '(Debian: apt-get install openjdk-17-jre-headless)')
        if self._requested_rest_port:
            require_free(self._requested_rest_port, 'Flink REST')
        try:
            lib = jars.flink_lib(self._log)
            job_server = jars.job_server_jar(self._log)
            self._prepare(lib)
            self._start_job_manager(self._memory_settings('JM'))
            task_manager_memory = self._memory_settings('TM')
            for index in range(1, self.task_managers + 1):
                self._start_task_manager(index, task_manager_memory)
            self._wait(self._all_slots_registered, 'the TaskManagers to register with the JobManager',
                       ['jobmanager'] + [f'taskmanager-{i}' for i in range(1, self.task_managers + 1)])
            self._start_job_server(job_server)
            if self.harness == 'external':
                self._start_worker_pool()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.time() - started
        self._log(f'Flink cluster up in {self.startup_seconds:.0f} s: {self.task_managers} TaskManager(s), '
                  f'web UI http://{HOST}:{self.ports["rest"]}, logs in {self.work_dir / "logs"}')

    def stop(self) -> None:
        """Ends every process started, newest first: SIGTERM to its session, SIGKILL after 20 s."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._log(f'{name} did not stop on SIGTERM: killing it')
            # Children that outlived their parent (say, an SDK worker) are in the same session.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            if process.stdout:
                process.stdout.close()

    # -- what a pipeline needs -----------------------------------------------------------------

    def beam_args(self) -> List[str]:
        """Flags for the pipeline's beam_args that run its Beam components on this cluster."""
        args = ['--runner=PortableRunner', f'--job_endpoint={HOST}:{self.ports["job"]}',
                f'--parallelism={self.task_managers * self.slots}',
                # Keep a job's SDK workers for its later stages instead of starting new ones.
                '--environment_cache_millis=60000']
        if self.harness == 'external':
            return args + ['--environment_type=EXTERNAL', f'--environment_config={HOST}:{self.ports["worker_pool"]}']
        command = json.dumps({'command': str(self._sdk_worker_launcher())})
        return args + ['--environment_type=PROCESS', f'--environment_config={command}']

    def rest(self, path: str, timeout: float = 10) -> dict:
        with urllib.request.urlopen(f'http://{HOST}:{self.ports["rest"]}{path}', timeout=timeout) as answer:
            return json.load(answer)

    def jobs(self) -> List[dict]:
        """The cluster's jobs: name, state, seconds, and the TaskManagers their subtasks ran on."""
        jobs = []
        for overview in sorted(self.rest('/jobs/overview')['jobs'], key=lambda job: job['start-time']):
            task_managers = set()
            for vertex in self.rest(f'/jobs/{overview["jid"]}')['vertices']:
                for entry in self.rest(f'/jobs/{overview["jid"]}/vertices/{vertex["id"]}/taskmanagers')['taskmanagers']:
                    task_managers.add(entry.get('taskmanager-id'))
            jobs.append({'name': overview['name'], 'state': overview['state'],
                         'seconds': overview['duration'] / 1000, 'start_time': overview['start-time'] / 1000,
                         'task_managers': sorted(tm for tm in task_managers if tm and tm != '(unassigned)')})
        return jobs

    # -- parts ------------------------------------------------------------------------------

    def _prepare(self, lib: Path) -> None:
        for name in ('conf', 'logs', 'tmp', 'artifacts'):
            (self.work_dir / name).mkdir(parents=True, exist_ok=True)
        self.ports = {'rest': self._requested_rest_port or free_port(), 'rpc': free_port(), 'blob': free_port(),
                      'job': free_port(), 'artifact': free_port(), 'expansion': free_port(),
                      'worker_pool': free_port()}
        parallelism = self.task_managers * self.slots
        conf = {
            'jobmanager.rpc.address': HOST, 'jobmanager.rpc.port': self.ports['rpc'], 'jobmanager.bind-host': HOST,
            'jobmanager.memory.process.size': '1024m',
            'rest.address': HOST, 'rest.bind-address': HOST, 'rest.port': self.ports['rest'],
            'blob.server.port': self.ports['blob'],
            'taskmanager.host': HOST, 'taskmanager.bind-host': HOST,
            'taskmanager.numberOfTaskSlots': self.slots, 'taskmanager.memory.process.size': '1728m',
            # A Beam batch job holds many blocking result partitions at once, and Flink's sort-merge
            # shuffle takes 512 network buffers (16 MB) for each by default: with the default network
            # memory (10%) ImageExampleGen's job failed with "Insufficient number of network buffers".
            'taskmanager.memory.network.fraction': 0.2, 'taskmanager.network.sort-shuffle.min-buffers': 64,
            'parallelism.default': parallelism, 'io.tmp.dirs': str(self.work_dir / 'tmp'),
            'web.tmpdir': str(self.work_dir / 'tmp'),
        }
        (self.work_dir / 'conf' / 'flink-conf.yaml').write_text(''.join(f'{k}: {v}\n' for k, v in conf.items()))
        (self.work_dir / 'conf' / 'log4j.properties').write_text(_LOG4J)
        self._classpath = ':'.join(str(p) for p in sorted(lib.glob('log4j-*.jar')) + [lib / f'flink-dist-{jars.FLINK_VERSION}.jar'])
        self._bash_java_utils = ':'.join([self._classpath, str(lib / 'bash-java-utils.jar')])

    def _memory_settings(self, which: str) -> Tuple[List[str], List[str]]:
        """JVM flags and -D settings for a JobManager or TaskManager, computed as Flink's scripts do."""
        command = ['java', *JAVA_17_FLAGS, '-cp', self._bash_java_utils, 'org.apache.flink.runtime.util.bash.BashJavaUtils',
                   f'GET_{which}_RESOURCE_PARAMS', '--configDir', str(self.work_dir / 'conf')]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise ClusterError('Flink\'s BashJavaUtils gave no answer in 120 s') from None
        values = [line.split(':', 1)[1] for line in result.stdout.splitlines()
                  if line.startswith('BASH_JAVA_UTILS_EXEC_RESULT:')]
        if result.returncode or len(values) < 2:
            raise ClusterError(f'Flink\'s memory settings for the {which} could not be computed:\n'
                               f'{(result.stdout + result.stderr)[-2000:]}')
        jvm_flags, dynamic = values[-2].split(), values[-1].split()
        return jvm_flags, dynamic

    def _java(self, name: str, jvm_flags: List[str], main: List[str]) -> None:
        log_file = self.work_dir / 'logs' / f'{name}.log'
        command = ['java', *JAVA_17_FLAGS, *jvm_flags, f'-Dlog.file={log_file}',
                   f'-Dlog4j.configurationFile=file:{self.work_dir / "conf" / "log4j.properties"}', *main]
        self._spawn(name, command)

    def _spawn(self, name: str, command: List[str], env: Optional[Dict[str, str]] = None) -> None:
        out = open(self.work_dir / 'logs' / f'{name}.out', 'wb')
        self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=env, cwd=self.work_dir, start_new_session=True)
        self.processes[name].stdout = out

    def _start_job_manager(self, memory: Tuple[List[str], List[str]]) -> None:
        jvm_flags, dynamic = memory
        self._java('jobmanager', ['-cp', self._classpath] + jvm_flags,
                   ['org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint',
                    '--configDir', str(self.work_dir / 'conf'), *dynamic])
        self._wait(lambda: self.rest('/overview', timeout=2) is not None, 'the JobManager\'s REST API', ['jobmanager'])

    def _start_task_manager(self, index: int, memory: Tuple[List[str], List[str]]) -> None:
        jvm_flags, dynamic = memory
        self._java(f'taskmanager-{index}', ['-cp', self._classpath] + jvm_flags,
                   ['org.apache.flink.runtime.taskexecutor.TaskManagerRunner', '--configDir', str(self.work_dir / 'conf'),
                    '-D', f'taskmanager.resource-id=taskmanager-{index}', *dynamic])

    def _all_slots_registered(self) -> bool:
        overview = self.rest('/overview', timeout=2)
        return overview['taskmanagers'] == self.task_managers and overview['slots-total'] == self.task_managers * self.slots

    def _start_job_server(self, jar: Path) -> None:
        self._spawn('job-server', ['java', *JAVA_17_FLAGS, '-jar', str(jar),
                                   f'--flink-master={HOST}:{self.ports["rest"]}',
                                   f'--flink-conf-dir={self.work_dir / "conf"}', f'--job-host={HOST}',
                                   f'--job-port={self.ports["job"]}', f'--artifact-port={self.ports["artifact"]}',
                                   f'--expansion-port={self.ports["expansion"]}',
                                   f'--artifacts-dir={self.work_dir / "artifacts"}'])
        self._wait(lambda: _listening(self.ports['job']), 'Beam\'s job server', ['job-server'])

    def _python_env(self) -> Dict[str, str]:
        """The SDK workers run this interpreter (worker_pool_main starts `python` from PATH) and this checkout."""
        env = dict(os.environ)
        env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
        return env

    def _start_worker_pool(self) -> None:
        self._spawn('worker-pool', [sys.executable, '-m', 'apache_beam.runners.worker.worker_pool_main',
                                    f'--service_port={self.ports["worker_pool"]}'], env=self._python_env())
        self._wait(lambda: _listening(self.ports['worker_pool']), 'Beam\'s SDK worker pool', ['worker-pool'])

    def _sdk_worker_launcher(self) -> Path:
        """PROCESS environments run one executable: a script that starts our SDK worker.

        The TaskManager discards what its workers print, so the script keeps it in logs/sdk-workers.log.
        """
        launcher = self.work_dir / 'sdk_worker.sh'
        if not launcher.exists():
            env = self._python_env()
            launcher.write_text('#!/bin/sh\n'
                                f'export PATH="{env["PATH"]}" PYTHONPATH="{env["PYTHONPATH"]}"\n'
                                f'exec "{sys.executable}" -m pipeline.flink.sdk_worker "$@" '
                                f'>>"{self.work_dir / "logs" / "sdk-workers.log"}" 2>&1\n')
            launcher.chmod(0o755)
        return launcher

    def _wait(self, ready: Callable[[], bool], what: str, watched: List[str]) -> None:
        """Until ready() is true; ClusterError if a watched process exits or the timeout passes."""
        deadline = time.time() + self.startup_timeout
        while True:
            for name in watched:
                if self.processes[name].poll() is not None:
                    raise ClusterError(f'{name} exited with code {self.processes[name].returncode} while waiting for '
                                       f'{what}:\n{self._tail(name)}')
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            if time.time() > deadline:
                tails = '\n'.join(f'--- {name}:\n{self._tail(name, 1500)}' for name in watched)
                raise ClusterError(f'{what} not ready after {self.startup_timeout:.0f} s:\n{tails}')
            time.sleep(0.5)

    def _tail(self, name: str, chars: int = 3000) -> str:
        text = ''
        for suffix in ('.out', '.log'):
            path = self.work_dir / 'logs' / f'{name}{suffix}'
            if path.exists():
                text += path.read_text(errors='replace')[-chars:]
        return text or '(no log)'


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0
