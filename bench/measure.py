"""Runs a command and samples the memory of its whole process tree while it runs."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import psutil


@dataclasses.dataclass
class Measured:
    returncode: int
    seconds: float
    output: str
    # (unix time, bytes of resident memory of the process and all its children)
    rss: List[Tuple[float, int]]

    def peak_rss(self, start: Optional[float] = None, end: Optional[float] = None) -> int:
        """Highest resident memory, optionally within [start, end] (unix times)."""
        values = [rss for t, rss in self.rss if (start is None or t >= start) and (end is None or t <= end)]
        return max(values, default=0)


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process] + process.children(recursive=True):
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(command: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
        interval: float = 0.2, timeout: float = 7200) -> Measured:
    started = time.time()
    process = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    watched = psutil.Process(process.pid)
    samples: List[Tuple[float, int]] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                samples.append((time.time(), _tree_rss(watched)))
            except psutil.Error:
                pass
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate(timeout=timeout)
    done.set()
    sampler.join()
    return Measured(process.returncode, time.time() - started, output, samples)


def folder_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
