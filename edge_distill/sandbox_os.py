"""The OS boundary of the PoT sandbox (Linux): what holds even when a program escapes Python.

Layers:
- namespaces (per worker, before anything starts threads): a user namespace when not root, then new
  network, IPC and PID namespaces. The worker forks once more and runs as PID 1 of its PID namespace, so
  a program child sees no process but its worker, and every child dies with the worker; SysV IPC objects
  of the host are invisible. Where the kernel refuses (no unprivileged user namespaces) they are missing,
  which costs depth only: seccomp alone carries every guarantee below.
- privileges (each child): a root worker drops the child to uid/gid 65534, no groups;
  `PR_SET_NO_NEW_PRIVS` so nothing can regain them;
- Landlock: file reads only beneath the Python installation and the edge_distill package, no file
  creation/modification/deletion anywhere, and (ABI >= 6) no signals to processes outside the child;
- seccomp (libseccomp through `pyseccomp`): EPERM for every call of the groups in `_SECCOMP_GROUPS`
  (exec and process creation, signals and signal-owner `fcntl`/`ioctl`s, sockets, file changes, SysV/POSIX
  IPC, scheduling and priority calls, terminal input injection, limits and timers, kernel attack surface).

`GUARANTEES` is what strict mode promises. For each, `Boundary.plan` names the layer it relies on: seccomp
when its whole rule group compiled, else Landlock at the ABI that provides it, else a namespace; strict
mode refuses when a guarantee has none (e.g. a libseccomp that lacks the signal rules on a kernel below
Landlock ABI 6). `sandbox_probe.probe` then forks a throwaway child that applies everything and checks each guarantee
for real (the calls fail, a SIGIO aimed at another process is not delivered); strict mode trusts only that.

The filter and the Landlock ruleset are built once per worker (`Boundary.build`) and only *applied* in
each child, which keeps the per-program cost near a plain fork.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOBODY = 65534
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None  # type: ignore[assignment]
if _LIBC is not None:
    _LIBC.syscall.restype = ctypes.c_long
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_THREAD = 0x00010000
_O_TMPFILE_BIT = 0o20000000
_MASK32 = 0xFFFFFFFF  # the kernel reads int/unsigned int arguments from the low 32 bits only
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX = 8, 10, 15
_TIOCSTI, _TIOCLINUX, _TIOCSPGRP = 0x5412, 0x541C, 0x5410
_FIOSETOWN, _SIOCSPGRP = 0x8901, 0x8902
# Landlock syscall numbers are the same on every architecture (added after the syscall table unification).
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

# Tests only: pretend the kernel offers at most this Landlock ABI / that libseccomp lacks these rule groups.
TEST_LANDLOCK_ABI_ENV = "EDGE_DISTILL_SANDBOX_TEST_LANDLOCK_ABI"
TEST_SECCOMP_OMIT_ENV = "EDGE_DISTILL_SANDBOX_TEST_SECCOMP_OMIT"


@dataclass(frozen=True)
class Guarantee:
    name: str
    what: str
    landlock_abi: int | None  # the Landlock ABI that provides it without seccomp (None: Landlock cannot)
    namespace: str | None = None  # a namespace that provides it without seccomp


GUARANTEES = (
    Guarantee("processes", "no exec, no new process, no ptrace", None),
    Guarantee("network", "no socket", None),
    Guarantee("file writes", "no file created, written, truncated, renamed or deleted", 3),
    Guarantee("file reads", "reads only beneath the Python installation", 1),
    Guarantee("signals", "no signal to another process (kill, pidfd, F_SETOWN/F_SETSIG/FIOSETOWN SIGIO)", 6),
    Guarantee("ipc", "no SysV/POSIX IPC object of another process", None, "ipc"),
    Guarantee("scheduling", "no CPU affinity, scheduling or priority change of another process", None),
    Guarantee("terminal", "no input typed into a terminal (TIOCSTI)", None),
    Guarantee("limits", "no change to its own limits or timers", None),
)

# seccomp rule groups, by guarantee: (syscall, action, condition). Action "eperm" (a clean PermissionError)
# or "enosys" (the C library then falls back to an older call we filter); condition None (always) or
# (argument index, mask, value): the rule applies when `arg & mask == value`, or, with mask 0, when
# `arg != value`.
_Rule = tuple[str, str, tuple[int, int, int] | None]


def _deny(*names: str) -> list[_Rule]:
    return [(n, "eperm", None) for n in names]


def _deny_arg(name: str, index: int, *values: int) -> list[_Rule]:
    return [(name, "eperm", (index, _MASK32, v)) for v in values]


_SECCOMP_GROUPS: dict[str, list[_Rule]] = {
    "processes": [
        *_deny(*"execve execveat fork vfork ptrace process_vm_readv process_vm_writev process_madvise kcmp "
               "pidfd_getfd unshare setns seccomp".split()),
        ("clone", "eperm", (0, _CLONE_THREAD, 0)),  # clone without CLONE_THREAD is a new process
        ("clone3", "enosys", None),  # flags hidden in memory: refused, glibc falls back to clone
    ],
    "network": _deny(*"socket socketpair connect bind listen accept accept4".split()),
    "file writes": [
        *_deny(*"creat unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir link linkat symlink "
               "symlinkat truncate ftruncate fallocate chmod fchmod fchmodat fchmodat2 chown fchown lchown "
               "fchownat mknod mknodat setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr "
               "utime utimes utimensat futimesat name_to_handle_at open_by_handle_at io_uring_setup "
               "io_uring_enter io_uring_register".split()),
        ("openat2", "enosys", None),  # its flags are in memory; glibc falls back to openat
        *[(name, "eperm", (arg, bit, bit)) for name, arg in (("open", 1), ("openat", 2))
          for bit in (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, _O_TMPFILE_BIT)],
    ],
    "signals": [
        *_deny(*"kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_open pidfd_send_signal".split()),
        # a file's signal owner gets SIGIO (or any F_SETSIG signal) on I/O: a kill by another name
        *_deny_arg("fcntl", 1, _F_SETOWN, _F_SETSIG, _F_SETOWN_EX),
        *_deny_arg("fcntl64", 1, _F_SETOWN, _F_SETSIG, _F_SETOWN_EX),
        *_deny_arg("ioctl", 1, _FIOSETOWN, _SIOCSPGRP, _TIOCSPGRP),
    ],
    "ipc": _deny(*"shmget shmat shmdt shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop semctl ipc "
                 "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr".split()),
    "scheduling": _deny(*"sched_setaffinity sched_setscheduler sched_setparam sched_setattr setpriority "
                        "ioprio_set migrate_pages move_pages".split()),
    "terminal": _deny_arg("ioctl", 1, _TIOCSTI, _TIOCLINUX),
    "limits": [*_deny(*"setrlimit setitimer alarm timer_create setsid".split()),
               ("prlimit64", "eperm", (2, 0, 0))],  # setting a limit (new_limit != NULL); reading is fine
    "kernel": _deny(*"mount umount2 pivot_root chroot mount_setattr move_mount open_tree fsopen fsmount "
                    "fsconfig fspick swapon swapoff reboot sethostname setdomainname init_module "
                    "finit_module delete_module kexec_load kexec_file_load bpf perf_event_open userfaultfd "
                    "keyctl add_key request_key acct quotactl syslog".split()),
}  # fmt: skip


@dataclass
class Boundary:
    """What this worker can enforce, built once; `apply` runs in each child."""

    seccomp: bytes | None = None  # the compiled BPF program (struct sock_filter[]), or None
    seccomp_groups: list[str] = field(default_factory=list)  # the rule groups compiled completely
    landlock_fd: int = -1
    landlock_abi: int = 0
    namespaces: list[str] = field(default_factory=list)  # entered by the worker: user, net, ipc, pid
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, read_roots: list[str], disabled: bool = False) -> Boundary:
        b = cls()
        if disabled or not sys.platform.startswith("linux"):
            b.notes.append("disabled for testing" if disabled else f"no OS boundary on {sys.platform}")
            return b
        max_abi = os.environ.get(TEST_LANDLOCK_ABI_ENV, "")
        b.landlock_abi, b.landlock_fd = _landlock_ruleset(
            read_roots, b.notes, int(max_abi) if max_abi.isdigit() else None
        )
        omit = {g for g in os.environ.get(TEST_SECCOMP_OMIT_ENV, "").split(",") if g}
        b.seccomp, b.seccomp_groups = _seccomp_filter(
            deny_all_opens=b.landlock_fd < 0, notes=b.notes, omit=omit
        )
        return b

    def layers(self) -> list[str]:
        out = [f"{ns}ns" for ns in self.namespaces if ns != "user"]
        out += [f"landlock-v{self.landlock_abi}"] if self.landlock_fd >= 0 else []
        return out + (["seccomp"] if self.seccomp is not None else [])

    def plan(self) -> tuple[dict[str, str], list[str]]:
        """({guarantee: the layer strict mode relies on for it}, [why a guarantee has none])."""
        relies: dict[str, str] = {}
        missing: list[str] = []
        for g in GUARANTEES:
            landlock_ok = (
                self.landlock_fd >= 0 and g.landlock_abi is not None and self.landlock_abi >= g.landlock_abi
            )
            if g.name == "file reads":  # path rules are Landlock's; seccomp can only refuse every open
                provider = f"landlock-abi>={g.landlock_abi}" if landlock_ok else (
                    "seccomp" if "file reads" in self.seccomp_groups else "")  # fmt: skip
            elif g.name in self.seccomp_groups:
                provider = "seccomp"
            elif landlock_ok:
                provider = f"landlock-abi>={g.landlock_abi}"
            elif g.namespace and g.namespace in self.namespaces:
                provider = f"{g.namespace}ns"
            else:
                provider = ""
            if provider:
                relies[g.name] = provider
                continue
            alternatives = [
                f"seccomp rules for it (libseccomp + pyseccomp{'; ' + '; '.join(self.notes) if self.notes else ''})"
            ]
            if g.landlock_abi is not None:
                have = f"ABI {self.landlock_abi}" if self.landlock_fd >= 0 else "none"
                alternatives.append(f"Landlock ABI >= {g.landlock_abi} (this kernel: {have})")
            if g.namespace:
                alternatives.append(f"an {g.namespace} namespace")
            missing.append(f"{g.name} ({g.what}) needs " + " or ".join(alternatives))
        return relies, missing

    def keep_fds(self) -> set[int]:
        return {self.landlock_fd} if self.landlock_fd >= 0 else set()

    def apply(self, require: bool) -> None:
        """In a fresh child: drop privileges, then Landlock, then seccomp. Raises if `require` and a
        layer fails (the child then reports an error instead of running the program)."""
        if os.geteuid() == 0:  # a root child could read/kill anything the filter does not cover
            drop_root()
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


def drop_root() -> None:
    os.setgroups([])
    os.setgid(NOBODY)  # as root these set the real, effective and saved ids alike
    os.setuid(NOBODY)


# --------------------------------------------------------------------------- namespaces
def _ns_id(kind: str) -> int:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return -1


def enter_namespaces() -> list[str]:
    """Move this (still single-threaded) worker into new network, IPC and PID namespaces (through a user
    namespace when not root) and become PID 1 of the PID namespace; returns the namespaces entered, each
    checked against /proc/self/ns. Must run before any import that starts threads.

    A new PID namespace takes effect for children only, so this process forks: the child carries on as
    the worker (PID 1 there: every program child dies with it) and this process waits for it, holding
    nothing, and exits with its status. The child dies with this process too (PR_SET_PDEATHSIG), so the
    host killing the pid it started kills the whole worker."""
    if not sys.platform.startswith("linux"):
        return []
    uid, gid = os.getuid(), os.getgid()
    before = {k: _ns_id(k) for k in ("net", "ipc")}
    base = 0 if uid == 0 else _CLONE_NEWUSER
    for flags in (
        _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWPID,
        _CLONE_NEWNET | _CLONE_NEWIPC,
        _CLONE_NEWNET,
    ):
        if _LIBC.unshare(base | flags) == 0:
            break
        log.debug("unshare(%#x) failed: %s", base | flags, os.strerror(ctypes.get_errno()))
    else:
        return []
    entered: list[str] = []
    if uid != 0:  # keep the same ids inside the user namespace; map nothing else
        entered.append("user")
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as e:
            log.debug("user namespace id maps failed: %s", e)
    entered += [k for k in ("net", "ipc") if _ns_id(k) not in (before[k], -1)]
    if flags & _CLONE_NEWPID:  # the next fork makes the namespace's init: it must be the worker
        _become_pid1()
        if os.getpid() == 1:
            entered.append("pid")
    return entered


def _become_pid1() -> None:
    alive_r, alive_w = os.pipe()  # EOF on alive_r: this process is gone (its pid is not visible inside)
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        _LIBC.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if select.select([alive_r], [], [], 0)[0]:  # died before the prctl: nobody would kill us
            os._exit(1)
        os.close(alive_r)
        return
    os.close(alive_r)
    for fd in (0, 1):  # the worker's pipes belong to the worker: the host sees EOF when it dies
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


# --------------------------------------------------------------------------- seccomp
def _seccomp_filter(
    deny_all_opens: bool, notes: list[str], omit: set[str] | None = None
) -> tuple[bytes | None, list[str]]:
    """The BPF program of a libseccomp filter (allow by default, the rule groups above) and the groups
    that compiled completely.

    pyseccomp is a thin ctypes binding with the API of libseccomp's own Python module; libseccomp
    itself (maintained, in every distribution) compiles the BPF and handles architectures (other
    ABIs, e.g. 32-bit syscalls on x86-64, are killed by its bad-arch default). It is compiled once
    per worker and loaded with one prctl per child: `SyscallFilter.load` would recompile it each time."""
    try:
        import pyseccomp as sc
    except Exception as e:  # noqa: BLE001 - not installed, libseccomp.so.2 missing or not found
        notes.append(f"seccomp unavailable: {type(e).__name__}: {e}")
        return None, []
    groups = dict(_SECCOMP_GROUPS)
    if deny_all_opens:  # no Landlock: no path rules, so no file may be opened at all
        groups["file reads"] = _deny("open", "openat")
    try:
        f = sc.SyscallFilter(defaction=sc.ALLOW)
        try:
            f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # a binary tree of syscall numbers, not a linear list
        except OSError:
            pass
        actions = {"eperm": sc.ERRNO(errno.EPERM), "enosys": sc.ERRNO(errno.ENOSYS)}
        complete = []
        for group, rules in groups.items():
            if group in (omit or ()):
                continue
            ok = True
            for name, action, arg in rules:
                if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:  # not a syscall of this architecture
                    continue
                args = []
                if arg is not None:
                    index, mask, value = arg
                    args = [sc.Arg(index, sc.MASKED_EQ, mask, value) if mask else sc.Arg(index, sc.NE, value)]
                try:
                    f.add_rule(actions[action], name, *args)
                except (RuntimeError, ValueError, OSError) as e:
                    notes.append(f"seccomp rule {name} failed: {e}")
                    ok = False
            if ok:
                complete.append(group)
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            bpf = out.read()
        if not bpf or len(bpf) % 8:
            raise ValueError(f"libseccomp exported {len(bpf)} bytes of BPF")
        return bpf, complete
    except Exception as e:  # noqa: BLE001 - any libseccomp failure means: no filter
        notes.append(f"seccomp filter could not be built: {type(e).__name__}: {e}")
        return None, []


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


# --------------------------------------------------------------------------- landlock
class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


def _landlock_ruleset(read_roots: list[str], notes: list[str], max_abi: int | None = None) -> tuple[int, int]:
    """(ABI version, ruleset fd) handling every file access the kernel knows (up to `max_abi`), granting
    only reads beneath `read_roots`; (0, -1) when Landlock is unavailable."""
    abi = _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        notes.append(f"landlock unavailable ({os.strerror(ctypes.get_errno())})")
        return 0, -1
    abi = min(abi, max_abi) if max_abi is not None else abi
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
