"""Model-written programs run sandboxed: hostile or runaway code cannot harm the run or the machine.

The first tests go through the Python guard the way a careless program would. The OS-level tests below
them escape that guard on purpose (its closures, ``gc``, re-imported modules, C calls, shells) and
show that the namespaces, the read-only mounts and the unprivileged uid still keep every file outside the
program's temporary folder untouched; they skip, saying why, where this machine does not allow a layer.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from dlm_eval import DataSource, sandbox
from dlm_eval.sandbox import (
    Capabilities,
    ExecResult,
    Limits,
    Plan,
    SandboxError,
    capabilities,
    run_program,
    run_programs,
)
from dlm_eval.tasks.humaneval import load_humaneval, program

from .common import FIXTURES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layers() -> Capabilities:
    return capabilities()


def need(found: Capabilities, *names: str) -> None:
    missing = [name for name in names if not getattr(found, name)]
    if missing:
        pytest.skip(f"this machine does not allow {', '.join(missing)} (sandbox layers here: {found.describe()})")


@pytest.fixture()
def victim(tmp_path):
    """A directory with a file that programs will try to destroy."""
    directory = tmp_path / "precious"
    directory.mkdir()
    (directory / "data.txt").write_text("keep me")
    return directory


def test_passing_and_failing_programs():
    assert run_program("assert sum([1, 2]) == 3\n").status == "passed"
    failed = run_program("assert 1 == 2, 'wrong answer'\n")
    assert failed.status == "failed" and "AssertionError: wrong answer" in failed.detail


def test_canonical_fixture_solutions_pass_and_empty_holes_fail():
    examples = load_humaneval(DataSource(FIXTURES))
    assert [r.status for r in run_programs([program(e, e.canonical) for e in examples])] == ["passed"] * 3
    assert not any(r.passed for r in run_programs([program(e, "") for e in examples]))


def test_infinite_loop_is_killed_and_the_run_continues():
    started = time.monotonic()
    results = run_programs(["while True:\n    pass\n", "print('fine')\n"], Limits(timeout=1.0), workers=2)
    assert [r.status for r in results] == ["timeout", "passed"]
    assert time.monotonic() - started < 10


def test_a_program_ignoring_termination_is_still_killed_on_time():
    source = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    started = time.monotonic()
    assert run_program(source, Limits(timeout=1.0)).status == "timeout"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("attack", [
    "import shutil\nshutil.rmtree({dir!r})",
    "import os\nos.remove({file!r})",
    "import os\nos.system('rm -rf {dir}')",
    "import subprocess\nsubprocess.run(['rm', '-rf', {dir!r}])",
    "open({file!r}, 'w').write('overwritten')",
    "import pathlib\npathlib.Path({file!r}).unlink()",
    "import os\nos.rename({file!r}, {file!r} + '.gone')",
    "import ctypes\nctypes.CDLL(None).unlink({file!r}.encode())",
    "import posix\nposix.unlink({file!r})",
    "import os\nfd = os.open({file!r}, os.O_WRONLY | os.O_TRUNC)",
])
def test_programs_cannot_delete_or_overwrite_files(attack, victim):
    file = victim / "data.txt"
    result = run_program(attack.format(dir=str(victim), file=str(file)))
    assert result.status == "failed"
    assert file.read_text() == "keep me"
    assert sorted(os.listdir(victim)) == ["data.txt"]


def test_programs_may_write_in_their_own_directory_which_is_removed(tmp_path):
    source = "import os\nopen('scratch.txt', 'w').write('ok')\nprint(os.getcwd())\n"
    assert run_program(source).status == "passed"
    leftovers = [p for p in os.listdir(os.environ.get("TMPDIR", "/tmp")) if p.startswith("dlm-sandbox-")]
    assert leftovers == []


@pytest.mark.parametrize("bomb", [
    "data = bytearray(64 * 1024 ** 3)",
    "import os\nwhile True:\n    os.fork()",
    "with open('big', 'wb') as f:\n    f.write(b'x' * (64 * 1024 * 1024))",
    "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
])
def test_resource_bombs_fail_quickly(bomb):
    started = time.monotonic()
    assert run_program(bomb, Limits(timeout=5.0)).status == "failed"
    assert time.monotonic() - started < 5


@pytest.fixture()
def listening_port():
    """A local TCP server for one connection: yields its port and a function returning what it received."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(1)
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            connection, _ = server.accept()
            received.append(connection.recv(100))
        except OSError:
            pass

    def finish() -> list[bytes]:
        listener.join()
        server.close()
        return received

    listener = threading.Thread(target=accept)
    listener.start()
    yield port, finish
    finish()


def test_network_is_unreachable(listening_port):
    port, finish = listening_port
    result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port})).sendall(b'leak')\n")
    assert result.status == "failed"
    assert finish() == []


def test_network_namespace_alone_blocks_connections(listening_port, layers):
    """The OS layer without the Python guard: a plain program in the namespace cannot connect."""
    need(layers, "network_namespace")
    port, finish = listening_port
    attempt = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
    result = run_program(attempt, python_guard=False)
    assert result.status == "failed" and re.search(r"Errno|unreachable", result.detail), result.detail
    assert finish() == []


# ----------------------------------------------------------------------------------------------------------
# OS-level isolation: the programs below undo the Python guard first
# ----------------------------------------------------------------------------------------------------------

class Canary:
    """A world-writable folder and file outside the program's temporary folder, with a known past mtime:
    the file permissions do not protect them, only the sandbox does."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(exist_ok=True)
        self.folder = root / "outside"
        self.folder.mkdir()
        self.file = self.folder / "canary.txt"
        self.file.write_bytes(b"keep me\n")
        self.file.chmod(0o666)
        for folder in (root, self.folder):
            folder.chmod(0o777)
        past = 1_000_000_000 * 10**9
        os.utime(self.file, ns=(past, past))
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple]:
        """Every entry under the root: type and permissions, owner, size, mtime and file bytes."""
        entries = {}
        for folder, names, files in os.walk(self.root):
            for path in [folder, *(os.path.join(folder, name) for name in names + files)]:
                info = os.lstat(path)
                content = Path(path).read_bytes() if stat.S_ISREG(info.st_mode) else None
                entries[os.path.relpath(path, self.root)] = (info.st_mode, info.st_uid, info.st_size,
                                                             info.st_mtime_ns, content)
        return entries

    def intact(self) -> bool:
        return self.snapshot() == self.before

    def program(self, attack: str) -> str:
        return f"FILE = {str(self.file)!r}\nFOLDER = {str(self.folder)!r}\n{ATTACKS[attack]}"


@pytest.fixture(params=["tmp_path", "var_tmp"])
def canary(request, tmp_path) -> Canary:
    """In pytest's tmp_path (under /tmp), and in /var/tmp, which stays visible inside the sandbox."""
    if request.param == "tmp_path":
        return Canary(tmp_path / "canary")
    if not os.access("/var/tmp", os.W_OK):
        pytest.skip("/var/tmp is not writable here")
    root = Path(tempfile.mkdtemp(prefix="dlm-canary-", dir="/var/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    return Canary(root)


# Re-enable every module the guard blocked (it only puts None into sys.modules).
UNBLOCK = ("import sys\nfor _name in [n for n, m in list(sys.modules.items()) if m is None]:\n"
           "    del sys.modules[_name]\n")
# The real open, taken from the guard's closure (or the plain one when there is no guard).
CLOSURE_OPEN = ("import builtins\ncells = getattr(builtins.open, '__closure__', None) or ()\n"
                "real_open = next((c.cell_contents for c in cells\n"
                "                  if getattr(c.cell_contents, '__name__', '') == 'open'), builtins.open)\n")
CTYPES = UNBLOCK + "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n" \
    "def check(result, what):\n    if result < 0:\n        raise OSError(ctypes.get_errno(), what)\n    return result\n"

ATTACKS = {
    "closure_open": CLOSURE_OPEN + "real_open(FILE, 'w').write('overwritten')\n",
    "gc_referrers_open": (
        "import gc, sys\n"
        "launcher = sys.modules['__main__'].__dict__\n"
        "guards = [f for f in gc.get_referrers(launcher) if getattr(f, '__name__', '') == 'guarded_open']\n"
        "real_open = next((c.cell_contents for g in guards for c in g.__closure__\n"
        "                  if getattr(c.cell_contents, '__name__', '') == 'open'), open)\n"
        "real_open(FILE, 'a').write('appended')\n"),
    "gc_objects_posix": (
        "import gc, os\n"
        "posix = next((m for m in gc.get_objects() if type(m).__name__ == 'module' and m.__name__ == 'posix'), os)\n"
        "posix.close(posix.open(FILE, os.O_WRONLY | os.O_TRUNC))\n"),
    "real_fileio_class": "import sys\ntype(sys.stderr.buffer.raw)(FILE, 'w').close()\n",
    "sqlite3_connect": "import sqlite3\nsqlite3.connect(FOLDER + '/new.db').execute('create table t (x)')\n",
    "os_mkdir": "import os\nos.mkdir(FOLDER + '/new')\n",
    "os_utime": "import os\nos.utime(FILE, (0, 0))\n",
    "os_chmod": UNBLOCK + "import posix\nposix.chmod(FILE, 0o600)\n",
    "os_rename": UNBLOCK + "import posix\nposix.rename(FILE, FILE + '.gone')\n",
    "os_truncate": UNBLOCK + "import posix\nposix.truncate(FILE, 0)\n",
    "ctypes_open_write": CTYPES + "fd = check(libc.open(FILE.encode(), os.O_WRONLY | os.O_TRUNC), 'open')\n"
                                  "check(libc.write(fd, b'overwritten', 11), 'write')\n",
    "ctypes_creat": CTYPES + "check(libc.open((FOLDER + '/new').encode(), os.O_WRONLY | os.O_CREAT, 0o644), 'open')\n",
    "ctypes_unlink": CTYPES + "check(libc.unlink(FILE.encode()), 'unlink')\n",
    "launcher_libc_unlink": (
        "import sys\nlauncher = sys.modules['__main__']\n"
        "if launcher._libc.unlink(FILE.encode()) != 0:\n    raise OSError(launcher.ctypes.get_errno(), 'unlink')\n"),
    "subprocess_shell": UNBLOCK + "import subprocess\nsubprocess.run(['sh', '-c', 'echo overwritten > \"$0\"', FILE], "
                                  "check=True)\n",
    "os_system": UNBLOCK + "import posix\n"
                           "status = posix.system('rm \"' + FILE + '\" && touch \"' + FOLDER + '/new\"')\n"
                           "if status:\n    raise OSError(f'the shell failed: {status}')\n",
    "symlink_then_write": UNBLOCK + CLOSURE_OPEN + "import posix\nposix.symlink(FILE, 'link')\n"
                                                   "real_open('link', 'w').write('overwritten')\n",
    "hardlink_then_write": UNBLOCK + "import posix\nposix.link(FILE, 'hard')\nopen('hard', 'w').write('overwritten')\n",
}


@pytest.mark.parametrize("python_guard", [True, False], ids=["with-guard", "os-only"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_escaping_the_guard_does_not_reach_files_outside_the_temp_folder(attack, python_guard, canary, layers):
    need(layers, "read_only_filesystem")
    result = run_program(canary.program(attack), python_guard=python_guard)
    assert result.status == "failed", result
    assert re.search(r"Error|denied|Read-only|No such file|failed", result.detail), result.detail
    assert canary.intact()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_the_attacks_do_defeat_the_python_guard_alone(attack, tmp_path):
    """Without the OS layers (the launcher asked for none), the guard does not stop any of these attacks:
    it is a convenience, and the OS layers above are what holds."""
    canary = Canary(tmp_path / "canary")
    result, _ = sandbox._execute(canary.program(attack), Limits(), Plan("keep", False, False, False),
                                 (os.getuid(), os.getgid()), python_guard=True)
    assert not canary.intact(), result


def test_programs_cannot_write_to_system_or_home_folders(layers):
    need(layers, "read_only_filesystem")
    name = f"dlm-sandbox-probe-{uuid.uuid4().hex}"
    folders = sorted({"/etc", "/root", "/usr/local", "/var/tmp", os.path.expanduser("~"), str(REPO)})
    targets = [os.path.join(folder, name) for folder in folders if os.path.isdir(folder)]
    source = UNBLOCK + CLOSURE_OPEN + (
        f"import posix\nwritten = []\nfor target in {targets!r}:\n"
        "    for attempt in (lambda: real_open(target, 'w').write('x'), lambda: posix.mkdir(target)):\n"
        "        try:\n            attempt()\n            written.append(target)\n"
        "        except OSError:\n            pass\n"
        "if not written:\n    raise PermissionError('every write was refused')\n")
    try:
        result = run_program(source, python_guard=False)
        assert result.status == "failed" and "every write was refused" in result.detail, result
        assert [target for target in targets if os.path.lexists(target)] == []
    finally:
        for target in targets:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)


def test_the_program_runs_unprivileged_in_its_own_namespaces(layers, tmp_path):
    need(layers, "read_only_filesystem", "network_namespace", "pid_namespace", "unprivileged")
    source = f"""
import os, socket
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
assert os.getuid() == {layers.uid} and os.getgid() == {layers.gid} and os.getgroups() == [], os.getgroups()
assert int(status['CapEff'], 16) == int(status['CapPrm'], 16) == 0 and status['NoNewPrivs'].strip() == '1', status
assert os.statvfs('/').f_flag & os.ST_RDONLY
assert os.getpid() == 1 and [p for p in os.listdir('/proc') if p.isdigit()] == ['1']
assert [name for _, name in socket.if_nameindex()] == ['lo']
assert not os.path.exists({str(tmp_path)!r}), 'the host /tmp is hidden'
assert os.listdir('/run') == []
for folder in (os.getcwd(), '/tmp', '/dev/shm'):
    with open(os.path.join(folder, 'scratch'), 'w') as handle:
        handle.write('ok')
"""
    result = run_program(source, python_guard=False)
    assert result.passed, result


def test_processes_left_behind_die_with_the_program(layers):
    need(layers, "pid_namespace")
    marker = f"{30 + uuid.uuid4().int % 10**6 / 10**6:.6f}"  # a sleep duration no one else uses
    source = UNBLOCK + (f"import posix\nif posix.fork() == 0:\n    posix.setsid()\n"
                        f"    posix.execv({shutil.which('sleep')!r}, ['sleep', {marker!r}])\n")
    assert run_program(source, python_guard=False).passed

    def survivors() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 5
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors() == []


def test_programs_cannot_signal_processes_outside(layers):
    if not (layers.pid_namespace or layers.unprivileged):
        need(layers, "pid_namespace")
    target = subprocess.Popen(["sleep", "60"])
    try:
        source = UNBLOCK + f"import posix, signal\nposix.kill({target.pid}, signal.SIGKILL)\n"
        result = run_program(source, python_guard=False)
        assert result.status == "failed" and re.search(r"ProcessLookupError|PermissionError", result.detail)
        assert target.poll() is None
    finally:
        target.kill()
        target.wait()


@pytest.mark.parametrize("bomb", [
    "data = bytearray(64 * 1024 ** 3)",
    "import os\nwhile True:\n    os.fork()",
    "with open('big', 'wb') as f:\n    f.write(b'x' * (64 * 1024 * 1024))",
    "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "with open('/tmp/fill', 'wb') as f:\n    for _ in range(100):\n        f.write(b'x' * 1024 ** 2)",
])
def test_resource_bombs_fail_quickly_without_the_guard(bomb, layers):
    need(layers, "unprivileged", "pid_namespace", "read_only_filesystem")
    started = time.monotonic()
    assert run_program(bomb, Limits(timeout=5.0), python_guard=False).status == "failed"
    assert time.monotonic() - started < 5


def test_a_user_namespace_gives_the_same_file_protection(canary):
    """The path taken without root: a user namespace mapping only the current user, capabilities dropped."""
    plan, ids = Plan("userns", True, True, True), (os.getuid(), os.getgid())
    probe, status = sandbox._execute(sandbox._PROBE, Limits(), plan, ids, python_guard=True)
    if not probe.passed:
        pytest.skip(f"no user namespace here: {(status or {}).get('error') or probe.detail}")
    assert status["layers"]["capabilities"] == 0 and status["layers"]["read_only_root"]
    for attack in ("closure_open", "os_mkdir", "os_utime", "ctypes_open_write", "subprocess_shell", "sqlite3_connect"):
        result, _ = sandbox._execute(canary.program(attack), Limits(), plan, ids, python_guard=False)
        assert result.status == "failed", (attack, result)
    assert canary.intact()


def test_missing_layers_are_announced_once_and_the_guard_still_applies(monkeypatch, caplog, victim):
    monkeypatch.setattr(sandbox, "_plans", lambda root: [Plan("keep", False, False, False)])
    sandbox.capabilities.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="dlm_eval.sandbox"):
            found = capabilities()
            assert capabilities() is found
            result = run_program(f"open({str(victim / 'data.txt')!r}, 'w').write('overwritten')")
        assert not found.complete and not found.read_only_filesystem and found.python_guard
        warnings = [r.getMessage() for r in caplog.records if r.name == "dlm_eval.sandbox"]
        assert len(warnings) == 1 and "missing: read-only filesystem" in warnings[0], warnings
        assert result.status == "failed" and (victim / "data.txt").read_text() == "keep me"
    finally:
        sandbox.capabilities.cache_clear()


def test_a_run_that_cannot_set_up_the_probed_layers_is_an_error(monkeypatch):
    capabilities()  # probed for real
    monkeypatch.setattr(sandbox, "_execute", lambda *a, **k: (ExecResult("failed", ""), {"error": "unshare: EPERM"}))
    with pytest.raises(SandboxError, match="could not be set up: unshare: EPERM"):
        run_program("pass\n")


def test_unprivileged_ids_must_not_be_root(monkeypatch):
    from llamafactory.errors import UserInputError

    monkeypatch.setenv("DLM_SANDBOX_UID", "0")
    with pytest.raises(UserInputError, match="DLM_SANDBOX_UID must be a positive integer"):
        sandbox._unprivileged_ids()


@pytest.mark.slow
def test_every_canonical_humaneval_solution_passes_in_the_sandbox(shared_data):
    examples = load_humaneval(DataSource(shared_data))
    assert len(examples) == 1033
    results = run_programs([program(e, e.canonical) for e in examples], workers=os.cpu_count() or 2)
    assert [(e.id, r.status, r.detail) for e, r in zip(examples, results) if not r.passed] == []
