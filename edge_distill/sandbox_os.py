"""The OS boundary of the PoT sandbox (Linux): what holds even when a program escapes Python.

Layers, all applied to each per-program child after it is forked from a sandbox worker:
- privileges: a root worker drops the child to uid/gid 65534 (nobody), no supplementary groups;
  `PR_SET_NO_NEW_PRIVS` so nothing can regain them;
- Landlock (kernel >= 5.13): file reads only beneath the Python installation and the edge_distill
  package, no file creation/modification/deletion anywhere, and (ABI >= 6) no signals to processes
  outside the child;
- seccomp (libseccomp through `pyseccomp`): exec, process creation (threads excepted), sockets,
  signals, ptrace, every file-modifying syscall, mount/namespace/kernel-module calls and io_uring fail
  with EPERM (a clean Python `PermissionError`, not a kill). Without Landlock, every `open` fails too,
  so a secret file cannot be read into an answer;
- the worker itself runs in a private network namespace (and a user namespace when not root) when
  the kernel allows it; that is extra depth, not required: seccomp already denies sockets.

The filter and the Landlock ruleset are built once per worker (`Boundary.build`) and only *applied* in
each child, which keeps the per-program cost near a plain fork. `probe` forks a throwaway child that
applies everything and checks that denied calls really fail; strict mode trusts only that probe.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOBODY = 65534
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None  # type: ignore[assignment]
if _LIBC is not None:
    _LIBC.syscall.restype = ctypes.c_long
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000
_O_TMPFILE_BIT = 0o20000000
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
# Landlock syscall numbers are the same on every architecture (added after the syscall table unification).
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

# Denied outright (EPERM). Names unknown to the running kernel/libseccomp are skipped.
_DENIED_SYSCALLS = (
    # processes, signals, debugging
    "execve", "execveat", "fork", "vfork", "kill", "tkill", "tgkill", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "ptrace", "process_vm_readv",
    "process_vm_writev", "process_madvise", "kcmp", "setsid", "setrlimit", "setitimer", "alarm",
    "timer_create", "unshare", "setns", "seccomp",
    # network
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # file creation, modification, deletion
    "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
    "link", "linkat", "symlink", "symlinkat", "truncate", "ftruncate", "fallocate", "chmod", "fchmod",
    "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "mknod", "mknodat", "setxattr",
    "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "utime", "utimes",
    "utimensat", "futimesat", "name_to_handle_at", "open_by_handle_at",
    # system administration and kernel attack surface
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "swapon", "swapoff", "reboot", "sethostname", "setdomainname",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "acct", "quotactl", "syslog",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # IPC objects outlive the process (a leak the host would pay for); scheduling of other processes
    "shmget", "shmat", "msgget", "semget", "mq_open", "mq_unlink", "setpriority", "ioprio_set",
    "sched_setscheduler", "sched_setparam", "sched_setattr",
)  # fmt: skip
# Flags that make an open() create, truncate or write: any one of them set => EPERM.
_WRITE_OPEN_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, _O_TMPFILE_BIT)


@dataclass
class Boundary:
    """What this worker can enforce, built once; `apply` runs in each child."""

    seccomp: bytes | None = None  # the compiled BPF program (struct sock_filter[]), or None
    landlock_fd: int = -1
    landlock_abi: int = 0
    netns: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, read_roots: list[str], disabled: bool = False) -> Boundary:
        b = cls()
        if disabled or not sys.platform.startswith("linux"):
            b.notes.append("disabled for testing" if disabled else f"no OS boundary on {sys.platform}")
            return b
        b.landlock_abi, b.landlock_fd = _landlock_ruleset(read_roots, b.notes)
        b.seccomp = _seccomp_filter(deny_all_opens=b.landlock_fd < 0, notes=b.notes)
        return b

    def layers(self) -> list[str]:
        out = ["netns"] if self.netns else []
        out += [f"landlock-v{self.landlock_abi}"] if self.landlock_fd >= 0 else []
        return out + (["seccomp"] if self.seccomp is not None else [])

    def keep_fds(self) -> set[int]:
        return {self.landlock_fd} if self.landlock_fd >= 0 else set()

    def apply(self, require: bool) -> None:
        """In a fresh child: drop privileges, then Landlock, then seccomp. Raises if `require` and a
        layer fails (the child then reports an error instead of running the program)."""
        if os.geteuid() == 0:  # a root child could read/kill anything the filter does not cover
            os.setgroups([])
            os.setgid(NOBODY)  # as root these set the real, effective and saved ids alike
            os.setuid(NOBODY)
        if sys.platform.startswith("linux"):
            no_new_privs()
        if self.landlock_fd >= 0:
            rc = _syscall(_SYS_LANDLOCK_RESTRICT_SELF, self.landlock_fd, 0)
            os.close(self.landlock_fd)
            if rc != 0 and require:
                raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        if self.seccomp is not None:
            _load_bpf(self.seccomp)
        elif require:
            raise OSError(errno.ENOSYS, "no seccomp filter: " + "; ".join(self.notes))


# --------------------------------------------------------------------------- namespaces
def enter_network_namespace() -> bool:
    """Move this (still single-threaded) worker into a new network namespace with no interfaces up,
    through a user namespace when not root. Must run before any import that starts threads."""
    if not sys.platform.startswith("linux"):
        return False
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWNET if uid == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    if _LIBC.unshare(flags) != 0:
        log.debug("unshare(netns) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    if uid != 0:  # keep the same ids inside the user namespace; map nothing else
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as e:
            log.debug("user namespace id maps failed: %s", e)
    return True


# --------------------------------------------------------------------------- seccomp
def _seccomp_filter(deny_all_opens: bool, notes: list[str]) -> bytes | None:
    """The BPF program of a libseccomp filter: allow by default, EPERM for everything listed above.

    pyseccomp is a thin ctypes binding with the API of libseccomp's own Python module; libseccomp
    itself (maintained, in every distribution) compiles the BPF and handles architectures (other
    ABIs, e.g. 32-bit syscalls on x86-64, are killed by its bad-arch default). It is compiled once
    per worker and loaded with one prctl per child: `SyscallFilter.load` would recompile it each time."""
    try:
        import pyseccomp as sc
    except Exception as e:  # noqa: BLE001 - not installed, libseccomp.so.2 missing or not found
        notes.append(f"seccomp unavailable: {type(e).__name__}: {e}")
        return None
    try:
        f = sc.SyscallFilter(defaction=sc.ALLOW)
        eperm = sc.ERRNO(errno.EPERM)

        def rule(action: Any, name: str, *args: Any) -> None:
            try:
                f.add_rule(action, name, *args)
            except (RuntimeError, ValueError, OSError):  # a syscall this kernel/arch does not have
                pass

        for name in _DENIED_SYSCALLS:
            rule(eperm, name)
        # clone without CLONE_THREAD is a new process; clone3 hides its flags in memory, so it is
        # refused with ENOSYS, which makes the C library fall back to clone.
        rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
        rule(sc.ERRNO(errno.ENOSYS), "clone3")
        rule(sc.ERRNO(errno.ENOSYS), "openat2")
        for name, flags_arg in (("open", 1), ("openat", 2)):
            if deny_all_opens:
                rule(eperm, name)
            else:
                for bit in _WRITE_OPEN_FLAGS:
                    rule(eperm, name, sc.Arg(flags_arg, sc.MASKED_EQ, bit, bit))
        rule(eperm, "prlimit64", sc.Arg(2, sc.NE, 0))  # reading limits is fine, setting is not
        for request in (_TIOCSTI, _TIOCLINUX):  # typing into a terminal
            rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            bpf = out.read()
        if not bpf or len(bpf) % 8:
            raise ValueError(f"libseccomp exported {len(bpf)} bytes of BPF")
        return bpf
    except Exception as e:  # noqa: BLE001 - any libseccomp failure means: no filter
        notes.append(f"seccomp filter could not be built: {type(e).__name__}: {e}")
        return None


# --------------------------------------------------------------------------- landlock
def _syscall(nr: int, *args: Any) -> int:
    return int(_LIBC.syscall(ctypes.c_long(nr), *args))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _load_bpf(bpf: bytes) -> None:
    """Install a compiled filter on this (single-threaded) process; needs no_new_privs first."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def no_new_privs() -> None:
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


def _landlock_ruleset(read_roots: list[str], notes: list[str]) -> tuple[int, int]:
    """(ABI version, ruleset fd) handling every file access the kernel knows, granting only reads
    beneath `read_roots`; (0, -1) when Landlock is unavailable."""
    abi = _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        notes.append(f"landlock unavailable ({os.strerror(ctypes.get_errno())})")
        return 0, -1
    fs = (1 << 13) - 1  # ABI 1: execute .. make_sym
    fs |= (1 << 13) if abi >= 2 else 0  # refer (rename/link across directories)
    fs |= (1 << 14) if abi >= 3 else 0  # truncate
    fs |= (1 << 15) if abi >= 5 else 0  # ioctl on devices
    attr = _RulesetAttr(fs=fs, net=3 if abi >= 4 else 0, scoped=3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        notes.append(f"landlock ruleset failed ({os.strerror(ctypes.get_errno())})")
        return 0, -1
    read = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
    for root in read_roots:
        try:
            root_fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            is_dir = os.path.isdir(root)
            rule = _PathBeneath(allowed_access=read if is_dir else read & ~(1 << 3), parent_fd=root_fd)
            if _syscall(_SYS_LANDLOCK_ADD_RULE, fd, 1, ctypes.byref(rule), 0) != 0:
                notes.append(f"landlock rule for {root} failed ({os.strerror(ctypes.get_errno())})")
        finally:
            os.close(root_fd)
    return abi, fd


def read_roots() -> list[str]:
    """Where a child may read: the Python installation (lazy stdlib/site-packages imports) and the
    edge_distill package itself — never the user's project directory, home or /proc."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parent)}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    return sorted(r for r in roots if os.path.exists(r))
