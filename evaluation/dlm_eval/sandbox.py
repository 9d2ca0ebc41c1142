"""Run model-written programs (HumanEval checks) where they cannot harm the run or the machine.

Each program runs in its own Python process, in its own session (so a timeout kills every process it
started), in a fresh temporary working directory that is deleted afterwards, under a wall-clock timeout and
(set by the guard on itself before the program starts) limits on CPU time, address space, file size,
open files and processes. When the system allows
it (``unshare -n``, as root or through a user namespace) the process gets an empty network namespace.
Inside, :mod:`dlm_eval.sandbox_guard` disables sockets, process creation, signals and writes or
deletions outside the working directory before the program starts.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

GUARD = Path(__file__).with_name("sandbox_guard.py")
_MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds
    memory_mb: int = 2048  # address space
    file_size_mb: int = 16
    processes: int = 32
    open_files: int = 64


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed", "failed" or "timeout"
    detail: str = ""  # the last line of the program's error output

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """The command prefix that gives a process an empty network namespace, or () where none works."""
    unshare = shutil.which("unshare")
    if unshare is not None:
        for prefix in ((unshare, "--net"), (unshare, "--map-root-user", "--net")):
            try:
                probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            if probe.returncode == 0:
                return prefix
    logger.warning("no network namespace is available here; sockets are disabled inside the sandbox only")
    return ()


def _rlimits(limits: Limits) -> dict[str, int]:
    """The ``resource.RLIMIT_*`` values the guard sets on itself before the program starts."""
    return {"RLIMIT_CPU": max(1, int(limits.timeout) + 1), "RLIMIT_AS": limits.memory_mb * _MB,
            "RLIMIT_FSIZE": limits.file_size_mb * _MB, "RLIMIT_NPROC": limits.processes,
            "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0}


def run_program(source: str, limits: Limits = Limits()) -> ExecResult:
    """Execute ``source`` sandboxed; ``passed`` when it exits with status 0 within the time limit."""
    with tempfile.TemporaryDirectory(prefix="dlm-sandbox-", ignore_cleanup_errors=True) as workdir:
        program = Path(workdir) / "program.py"
        program.write_text(source, encoding="utf-8")
        environment = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        command = [*network_isolation(), sys.executable, "-I", str(GUARD), program.name,
                   json.dumps(_rlimits(limits))]
        with open(Path(workdir) / "stdout", "wb") as out, open(Path(workdir) / "stderr", "wb") as err:
            process = subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=err, start_new_session=True)
            try:
                code = process.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return ExecResult("timeout", f"killed after {limits.timeout:g} s")
            finally:
                _kill_group(process)
        if code == 0:
            return ExecResult("passed")
        return ExecResult("failed", _last_line(Path(workdir) / "stderr") or f"exit status {code}")


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the program's whole session (it is the group leader), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _last_line(path: Path, limit: int = 4096) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


def run_programs(sources: Sequence[str], limits: Limits = Limits(), *, workers: int = 4,
                 desc: str = "executing") -> list[ExecResult]:
    """Run many programs, ``workers`` at a time, in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_program, source, limits) for source in sources]
        return [future.result() for future in tqdm(futures, desc=desc, unit="program")]
