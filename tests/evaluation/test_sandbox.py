"""Model-written programs run sandboxed: hostile or runaway code cannot harm the run or the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from dlm_eval import DataSource
from dlm_eval.sandbox import Limits, network_isolation, run_program, run_programs
from dlm_eval.tasks.humaneval import load_humaneval, program

from .common import FIXTURES


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


def test_network_namespace_alone_blocks_connections(listening_port):
    """The outer layer, without the in-process guard: a plain Python in the namespace cannot connect."""
    prefix = network_isolation()
    if not prefix:
        pytest.skip("no network namespace can be created on this machine")
    port, finish = listening_port
    attempt = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
    completed = subprocess.run([*prefix, sys.executable, "-c", attempt], capture_output=True, timeout=30)
    assert completed.returncode != 0
    assert finish() == []
