"""Child side of the sandbox: isolate this process at the OS level, then run one program.

Executed as ``python -I sandbox_guard.py CONFIG_JSON`` by :mod:`dlm_eval.sandbox`, in a temporary directory
that holds ``program.py``. The configuration names the layers to set up (the parent found by a probe which
ones this machine allows); every one that is asked for must succeed, otherwise nothing runs:

1. new namespaces (``unshare(2)``): mount, network, PID and IPC; as a user without root, inside a new
   user namespace that maps only that user;
2. in the mount namespace: every mount made private and remounted read-only and nosuid, a fresh
   size-limited tmpfs on ``/tmp``, ``/dev/shm`` and on the working directory itself (the program writes
   there and nowhere else; the host's directory is never touched), an empty read-only ``/run`` (daemons'
   Unix sockets), a fresh ``/proc`` for the PID namespace;
   directories the unprivileged user could not enter on the way to the interpreter (``/root`` for a
   pyenv Python) are replaced by a read-only tmpfs holding only the interpreter's own folders;
3. resource limits (CPU, address space, file size, open files, processes, no core files);
4. as root: all groups dropped and the uid/gid switched to the configured unprivileged ids, which clears
   every capability; in a user namespace: every capability dropped; in both, ``no_new_privs`` (setuid
   programs cannot raise privileges) and, in a PID namespace, death with this launcher;
5. optionally the Python-level guard below (refuses sockets, process creation, writes outside the
   working directory, ... with readable errors). It is a convenience, not a boundary: a program can undo
   it. Where the OS layers are missing it is the only thing between the program and the files.

The launcher tells the parent which layers are in place through a pipe the program never sees, then
compiles and executes the program; the exit status tells whether the program's own checks passed.
"""

import builtins
import ctypes
import errno
import json
import os
import re
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x20, 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 0x40000, 0x200000, 0x1000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Per-mount options that must be kept on a remount (a user namespace may not clear them).
_KEPT_OPTIONS = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                 "relatime": MS_RELATIME}
_ATIME = ("noatime", "relatime")
SETUP_FAILED = 126  # exit status when a requested layer could not be set up


class SetupError(Exception):
    """A requested isolation layer could not be put in place."""


# --------------------------------------------------------------------------------------------------------
# OS layers
# --------------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _encode(value):
    return None if value is None else os.fsencode(value)


def _mount(source, target, fstype, flags, data=None) -> None:
    _check(_libc.mount(_encode(source), _encode(target), _encode(fstype), flags, _encode(data)),
           f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _allows(path: str, uid: int, gid: int, bit: int) -> bool:
    """Whether uid:gid (no supplementary groups) has permission ``bit`` (1 = search, 4 = read) on ``path``."""
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode >> 6 & bit)
    if st.st_gid == gid:
        return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)


def _blocked_ancestor(path: str, uid: int, gid: int):
    """The outermost directory on the way to ``path`` that uid:gid cannot enter, or None."""
    current = "/"
    for part in path.strip("/").split("/"):
        if not _allows(current, uid, gid, 1):
            return current
        current = os.path.join(current, part)
    return None


def _outermost(paths):
    """``paths`` without those inside another of them."""
    kept = []
    for path in sorted(set(paths)):
        if not any(path == other or path.startswith(other.rstrip("/") + "/") for other in kept):
            kept.append(path)
    return kept


def _interpreter_paths():
    """Directories the interpreter reads after start-up: its prefixes, executable and module path."""
    candidates = {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix,
                  os.path.dirname(os.path.realpath(sys.executable)), *sys.path}
    return sorted(path for path in {os.path.realpath(p) for p in candidates if p} if os.path.exists(path))


def _expose(paths, uid: int, gid: int) -> None:
    """Make ``paths`` reachable for uid:gid: a directory it cannot enter on their way becomes a tmpfs
    that holds only those paths (bind mounts of the real ones); the rest of that directory is hidden."""
    hidden: dict = {}
    for path in paths:
        blocked = _blocked_ancestor(path, uid, gid)
        if blocked is not None:
            hidden.setdefault(blocked, []).append(path)
    for blocked, inside in sorted(hidden.items()):
        if blocked == "/":
            raise SetupError(f"uid {uid} cannot enter /")
        handles = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in _outermost(inside)]
        _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for path, fd in handles:
            source = f"/proc/self/fd/{fd}"
            if os.path.isdir(source):
                os.makedirs(path, 0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
            _mount(source, path, None, MS_BIND | MS_REC)
            os.close(fd)


def _mounts():
    """(mount point, per-mount options) of every mount in this namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            yield point, fields[5].split(",")


def _remount_read_only() -> None:
    """Every mount read-only and nosuid, keeping the options a user namespace may not clear."""
    for point, options in list(_mounts()):
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= sum(flag for name, flag in _KEPT_OPTIONS.items() if name in options)
        if not any(name in options for name in _ATIME):
            flags |= MS_STRICTATIME
        try:
            _mount(None, point, None, flags)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.EACCES):  # hidden under another mount / unreachable
                raise


def _confine_filesystem(workdir: str, expose, owner, scratch_bytes: int, new_proc: bool) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host's mounts
    if expose:
        _expose(expose, *owner)
    _remount_read_only()
    if new_proc:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        except OSError:
            pass  # the host's /proc stays, read-only (some containers forbid a new one)
    # Daemons' Unix sockets live under /run, and a network namespace does not cover sockets in files.
    if os.path.isdir("/run") and not os.path.islink("/run"):
        _mount("tmpfs", "/run", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4k")
    scratch = f"size={scratch_bytes},nr_inodes=16384"
    for directory in ("/tmp", "/dev/shm"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,{scratch}")
    os.makedirs(workdir, 0o755, exist_ok=True)  # gone when it lay under the fresh /tmp
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,uid={owner[0]},gid={owner[1]},{scratch}")


def _drop_capabilities() -> None:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _run_under_pid_namespace(status_fd: int) -> None:
    """Fork: the child (PID 1 of the new namespace) returns and goes on; this process waits for it and
    exits with its status. When PID 1 ends, the kernel kills everything else in the namespace."""
    child = os.fork()
    if child == 0:
        return
    os.close(status_fd)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _limit_resources(limits) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _state() -> dict:
    """What is in place, read back from the kernel."""
    status = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "capabilities": int(status.get("CapEff", "0"), 16) | int(status.get("CapPrm", "0"), 16),
            "no_new_privs": status.get("NoNewPrivs") == "1",
            "read_only_root": bool(os.statvfs("/").f_flag & os.ST_RDONLY)}


def isolate(config: dict, workdir: str) -> dict:
    """Set up every layer in ``config["plan"]``; returns them as the kernel reports them."""
    plan, uid, gid = config["plan"], config["uid"], config["gid"]
    os.umask(0o022)
    in_userns = plan["user"] == "userns"
    owner = (uid, gid) if plan["user"] == "drop" else (os.getuid(), os.getgid())
    needed = _interpreter_paths() + [workdir]
    flags = ((CLONE_NEWNS if plan["mount"] else 0) | (CLONE_NEWNET if plan["network"] else 0)
             | (CLONE_NEWPID | CLONE_NEWIPC if plan["pid"] else 0) | (CLONE_NEWUSER if in_userns else 0))
    if flags:
        try:
            _check(_libc.unshare(flags), "unshare")
        except OSError as error:
            raise SetupError(f"cannot create the namespaces: {error}") from None
    if in_userns:
        real_uid, real_gid = owner
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{real_uid} {real_uid} 1\n")
        _write("/proc/self/gid_map", f"{real_gid} {real_gid} 1\n")
    if plan["pid"]:
        _run_under_pid_namespace(config["status_fd"])
    if plan["mount"]:
        _confine_filesystem(workdir, needed if plan["user"] == "drop" else [], owner, config["scratch_bytes"],
                            new_proc=plan["pid"])
    elif plan["user"] == "drop":
        unreachable = [path for path in needed if _blocked_ancestor(path, uid, gid) is not None]
        if unreachable:
            raise SetupError(f"uid {uid} could not reach {unreachable[0]} without a mount namespace")
        os.chown(workdir, uid, gid)
    os.chdir(workdir)  # into the fresh tmpfs, not the directory now hidden under it
    _limit_resources(config["rlimits"])
    if plan["user"] == "drop":
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # from root to another uid: every capability is cleared
    elif in_userns:
        _drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if plan["pid"]:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which would reset it
    state = _state()
    if plan["user"] == "drop" and (state["uid"], state["gid"], state["groups"]) != (uid, gid, []):
        raise SetupError(f"running as {state['uid']}:{state['gid']}, not {uid}:{gid}")
    if plan["user"] != "keep" and state["capabilities"]:
        raise SetupError("capabilities remain after dropping them")
    if plan["mount"] and not state["read_only_root"]:
        raise SetupError("/ is still writable")
    return {"mount_namespace": plan["mount"], "network_namespace": plan["network"], "pid_namespace": plan["pid"],
            "user_namespace": in_userns, **state}


# --------------------------------------------------------------------------------------------------------
# Python-level guard (convenience only; see the module docstring)
# --------------------------------------------------------------------------------------------------------

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
    """Opening a file for writing is refused outside ``root`` (the working directory)."""
    import _io
    import io

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
    import shutil
    import socket

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


def python_guard() -> None:
    _confine_writes(os.path.realpath(os.getcwd()))
    _disable_harmful_calls()


# --------------------------------------------------------------------------------------------------------


def _report(status_fd: int, message: dict) -> None:
    os.write(status_fd, json.dumps(message).encode())
    os.close(status_fd)


def main() -> None:
    config = json.loads(sys.argv[1])
    status_fd, workdir = config["status_fd"], os.path.realpath(os.getcwd())
    with open("program.py", encoding="utf-8") as handle:  # read now: the directory is hidden from here on
        source = handle.read()
    try:
        layers = isolate(config, workdir)
    except (SetupError, OSError) as error:
        _report(status_fd, {"error": str(error)})
        os._exit(SETUP_FAILED)
    _report(status_fd, {"layers": layers})
    if config["plan"]["mount"]:
        with open("program.py", "w", encoding="utf-8") as handle:  # the tracebacks show its lines
            handle.write(source)
    if config["python_guard"]:
        python_guard()
    sys.argv = ["program.py"]
    code = compile(source, "program.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": builtins})


if __name__ == "__main__":
    main()
