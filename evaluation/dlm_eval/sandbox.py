"""Run model-written programs (HumanEval checks) where they cannot harm the run or the machine.

Each program runs in its own Python process and session, under a wall-clock timeout that kills the whole
session, started through :mod:`dlm_eval.sandbox_guard`, which isolates it at the OS level before the
program's first line: new mount, network, PID and IPC namespaces, every mount read-only but fresh
size-limited tmpfs on its working directory, ``/tmp`` and ``/dev/shm``, resource limits, and an
unprivileged uid/gid without capabilities (as root: ``DLM_SANDBOX_UID``/``DLM_SANDBOX_GID``, default
65534 = nobody/nogroup; without root: the user's own uid inside a user namespace). A Python-level guard
is added last for readable errors; it is not a boundary.

Which layers this machine allows is probed once (:func:`capabilities`), strongest first; a weaker set is
logged as a warning, and the HumanEval results record it. Every later run must get the same layers or
:class:`SandboxError` is raised: a program never silently runs with less isolation than announced.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from llamafactory.errors import UserInputError

logger = logging.getLogger(__name__)

GUARD = Path(__file__).with_name("sandbox_guard.py")
NOBODY = 65534
_MB = 1024 * 1024


class SandboxError(RuntimeError):
    """The sandbox could not be set up with the layers the probe found (the machine changed?)."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds
    memory_mb: int = 2048  # address space
    file_size_mb: int = 16
    processes: int = 32
    open_files: int = 64
    scratch_mb: int = 64  # size of each private tmpfs: the working directory, /tmp and /dev/shm


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed", "failed" or "timeout"
    detail: str = ""  # the last line of the program's error output

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Plan:
    """The layers asked of the launcher. ``user``: "drop" (root switches to the unprivileged ids),
    "userns" (a user namespace mapping only the current user; capabilities dropped) or "keep"."""

    user: str
    mount: bool
    network: bool
    pid: bool


@dataclass(frozen=True)
class Capabilities:
    """The isolation layers programs run under on this machine."""

    read_only_filesystem: bool  # own mount namespace: all read-only but private tmpfs workdir, /tmp, /dev/shm
    network_namespace: bool  # no network at all
    pid_namespace: bool  # PID + IPC: sees and signals only its own processes; all killed when it ends
    user_namespace: bool
    uid: int
    gid: int
    unprivileged: bool  # not uid 0, no capabilities, no_new_privs
    rlimits: bool = True
    python_guard: bool = True  # convenience only
    plan: Plan | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def complete(self) -> bool:
        return self.read_only_filesystem and self.network_namespace and self.pid_namespace and self.unprivileged

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "plan"}

    def describe(self) -> str:
        layers = [("read-only filesystem (mount namespace)", "read-only filesystem", self.read_only_filesystem),
                  ("network namespace", "network namespace", self.network_namespace),
                  ("PID and IPC namespaces", "PID and IPC namespaces", self.pid_namespace),
                  (f"unprivileged (uid {self.uid}, no capabilities)", "unprivileged user", self.unprivileged)]
        active = [name for name, _, on in layers if on] + ["rlimits", "timeout", "Python guard"]
        missing = [short for _, short, on in layers if not on]
        return ", ".join(active) + (f"; missing: {', '.join(missing)}" if missing else "")


def _unprivileged_ids() -> tuple[int, int]:
    ids = []
    for name in ("DLM_SANDBOX_UID", "DLM_SANDBOX_GID"):
        text = os.environ.get(name, str(NOBODY))
        if not text.isdigit() or int(text) == 0:
            raise UserInputError(f"{name} must be a positive integer (not root), got {text!r}")
        ids.append(int(text))
    return ids[0], ids[1]


def _plans(root: bool) -> list[Plan]:
    """Candidate layer sets, strongest first."""
    namespaces = [Plan("userns", True, True, True), Plan("userns", True, True, False)]
    if root:
        return [Plan("drop", True, True, True), Plan("drop", True, True, False), *namespaces,
                Plan("drop", False, True, False), Plan("drop", False, False, False), Plan("keep", False, True, False),
                Plan("keep", False, False, False)]
    return [*namespaces, Plan("userns", False, True, False), Plan("keep", False, False, False)]


_PROBE = "import decimal, hashlib, json\nopen('probe.txt', 'w').write('ok')\nassert open('probe.txt').read() == 'ok'\n"


@functools.lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    """Probe (once) the strongest set of layers this machine allows; log it, as a warning when incomplete."""
    uid, gid = _unprivileged_ids()
    for plan in _plans(os.geteuid() == 0):
        result, status = _execute(_PROBE, Limits(timeout=60), plan, (uid, gid), python_guard=True)
        if result.passed and status and "layers" in status:
            layers = status["layers"]
            found = Capabilities(
                read_only_filesystem=plan.mount and layers["read_only_root"], network_namespace=plan.network,
                pid_namespace=plan.pid, user_namespace=plan.user == "userns", uid=layers["uid"], gid=layers["gid"],
                unprivileged=layers["uid"] != 0 and layers["capabilities"] == 0 and layers["no_new_privs"],
                plan=plan)
            if found.complete:
                logger.info("sandbox layers: %s", found.describe())
            else:
                logger.warning("sandbox layers: %s. Generated code is less isolated here; evaluate untrusted "
                               "models inside a container or VM", found.describe())
            return found
        logger.debug("sandbox plan %s unavailable: %s", plan, (status or {}).get("error") or result.detail)
    raise SandboxError("the sandbox launcher could not start a program at all")


def _rlimits(limits: Limits) -> dict[str, int]:
    """The ``resource.RLIMIT_*`` values the launcher sets before the program starts."""
    return {"RLIMIT_CPU": max(1, int(limits.timeout) + 1), "RLIMIT_AS": limits.memory_mb * _MB,
            "RLIMIT_FSIZE": limits.file_size_mb * _MB, "RLIMIT_NPROC": limits.processes,
            "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0}


def run_program(source: str, limits: Limits = Limits(), *, python_guard: bool = True) -> ExecResult:
    """Execute ``source`` sandboxed; ``passed`` when it exits with status 0 within the time limit.

    ``python_guard=False`` leaves out the Python-level guard (the tests use it to show that the OS layers
    hold on their own)."""
    found = capabilities()
    assert found.plan is not None
    result, status = _execute(source, limits, found.plan, (found.uid, found.gid), python_guard=python_guard)
    if status is None:
        if result.status == "timeout":
            return result
        raise SandboxError(f"the sandbox launcher ended before reporting: {result.detail}")
    if "error" in status:
        raise SandboxError(f"the sandbox could not be set up: {status['error']}")
    layers = status["layers"]
    if (layers["uid"], layers["gid"], layers["read_only_root"]) != (found.uid, found.gid,
                                                                   found.read_only_filesystem):
        raise SandboxError(f"the sandbox came up with other layers than probed: {layers}")
    return result


def _execute(source: str, limits: Limits, plan: Plan, ids: tuple[int, int], *,
             python_guard: bool) -> tuple[ExecResult, dict[str, Any] | None]:
    """Run one program through the launcher; returns its result and the launcher's report (None if none)."""
    with tempfile.TemporaryDirectory(prefix="dlm-sandbox-", ignore_cleanup_errors=True) as workdir, \
            tempfile.TemporaryFile() as err:
        (Path(workdir) / "program.py").write_text(source, encoding="utf-8")
        environment = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        read_end, write_end = os.pipe()
        config = {"plan": dataclasses.asdict(plan), "uid": ids[0], "gid": ids[1], "rlimits": _rlimits(limits),
                  "scratch_bytes": limits.scratch_mb * _MB, "status_fd": write_end, "python_guard": python_guard}
        try:
            with open(os.devnull, "wb") as out:
                process = subprocess.Popen([sys.executable, "-I", str(GUARD), json.dumps(config)], cwd=workdir,
                                           env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           start_new_session=True, pass_fds=(write_end,))
            os.close(write_end)
            write_end = -1
            try:
                code = _wait(process, limits.timeout)
            finally:
                _kill_group(process)
            status = _read_status(read_end)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if code is None:
            return ExecResult("timeout", f"killed after {limits.timeout:g} s"), status
        if code == 0:
            return ExecResult("passed"), status
        return ExecResult("failed", _last_line(err) or f"exit status {code}"), status


def _wait(process: subprocess.Popen, timeout: float) -> int | None:
    """The exit status, or None after ``timeout`` seconds. A pidfd wakes up at once when the process ends
    (``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, a large share of a short program's time)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        ended = _readable(pidfd, timeout)
    finally:
        os.close(pidfd)
    return process.wait() if ended else None


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # not select.select: descriptors above 1023 are fine
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _read_status(fd: int) -> dict[str, Any] | None:
    """The launcher's one JSON message, written and closed before the program starts."""
    chunks = []
    while _readable(fd, 5.0):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks)) if chunks else None
    except ValueError:
        return None


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the program's whole session (it is the group leader), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _last_line(handle: BinaryIO, limit: int = 4096) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


def run_programs(sources: Sequence[str], limits: Limits = Limits(), *, workers: int = 4,
                 desc: str = "executing") -> list[ExecResult]:
    """Run many programs, ``workers`` at a time, in input order."""
    capabilities()  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_program, source, limits) for source in sources]
        return [future.result() for future in tqdm(futures, desc=desc, unit="program")]
