"""Child side of the sandbox: limit resources, disable what could harm the machine, run one program.

Executed as a script (``python -I sandbox_guard.py program.py LIMITS_JSON``) inside a fresh temporary
directory and, where the system allows, an empty network namespace (see :mod:`dlm_eval.sandbox`). It
sets the given ``resource`` limits on its own process; removes the means to delete or rewrite files
outside that directory, to start processes, to signal other processes, to open sockets and to raise
the limits again; then executes the program. The exit status tells the parent whether the program's
own checks passed. This is defence in depth for model-written test programs, not a security boundary
against a determined attacker.
"""

import _io
import builtins
import io
import json
import os
import resource
import shutil
import socket
import sys

_DISABLED_OS = (
    "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod", "fchmod",
    "lchmod", "chown", "fchown", "lchown", "chroot", "link", "symlink", "mkfifo", "mknod", "kill", "killpg",
    "fork", "forkpty", "system", "popen", "setsid", "setpgid", "setuid", "setgid",
    "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle",
    "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
    "pidfd_open",
)
_BLOCKED_MODULES = (
    "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty",
    "_socket", "ssl", "_ssl", "resource", "posix",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _refuse(name: str):
    def refused(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the evaluation sandbox")

    return refused


def _inside(root: str, path) -> bool:
    if isinstance(path, int):  # an already-open descriptor
        return True
    resolved = os.path.realpath(os.fsdecode(path))
    return resolved == root or resolved.startswith(root + os.sep)


def _confine_writes(root: str) -> None:
    """Opening a file for writing is allowed only inside ``root`` (the sandbox's working directory)."""
    real_open, real_os_open, real_file_io = io.open, os.open, io.FileIO

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not _inside(root, file):
            raise PermissionError(f"writing {file!r} outside the sandbox is not allowed")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and not _inside(root, path):
            raise PermissionError(f"writing {path!r} outside the sandbox is not allowed")
        return real_os_open(path, flags, *args, **kwargs)

    class GuardedFileIO(real_file_io):
        def __init__(self, file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+") and not _inside(root, file):
                raise PermissionError(f"writing {file!r} outside the sandbox is not allowed")
            super().__init__(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open
    os.open = guarded_os_open
    io.FileIO = _io.FileIO = GuardedFileIO


def _disable_harmful_calls() -> None:
    posix = sys.modules.get("posix")
    for name in _DISABLED_OS:
        for module in (os, posix):
            if module is not None and hasattr(module, name):
                setattr(module, name, _refuse(f"os.{name}"))
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _refuse(f"shutil.{name}"))
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, _refuse(f"socket.{name}"))
    for name in _BLOCKED_MODULES:
        sys.modules[name] = None


def _limit_resources(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def main() -> None:
    program, limits = sys.argv[1], json.loads(sys.argv[2])
    with open(program, encoding="utf-8") as handle:
        code = compile(handle.read(), program, "exec")
    _limit_resources(limits)
    _confine_writes(os.path.realpath(os.getcwd()))
    _disable_harmful_calls()
    sys.argv = [program]
    exec(code, {"__name__": "__main__", "__builtins__": builtins})


if __name__ == "__main__":
    main()
