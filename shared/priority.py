"""Background work at a lower CPU priority than searches.

On a host whose cores are all busy (a burst of ingest on a small machine), every process gets its fair
share of them, and a search, a millisecond or two of CPU, waits behind batches being parsed, embedded,
indexed and merged. The services that do that work (embedder, indexer, notifier, scheduler, and the
gateway's ingest-body workers) lower their own priority at start (``SEMAFLOW_BACKGROUND_NICE``), so the
kernel gives the gateway a core first; on an idle host nothing changes, and background work gets every
core searches leave.

Linux weighs processes by niceness only within a scheduling group. Where autogroups are on (the default
of many distributions' kernels), each session is one group, shared fairly with every other: ``semaflow up``
starts each service in a session of its own, so a service sets its session's group niceness too. A body
worker stays in the gateway's group, where its niceness puts the gateway's own threads first. Containers
are weighed by their cgroups' CPU weights instead, so there the setting orders only the processes of one
container.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

__all__ = ["autogroup_niceness", "lower_priority", "sessions_grouped", "thread_niceness"]

_AUTOGROUP = Path("/proc/self/autogroup")
_AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to at least ``niceness`` (never lower it); the niceness it has now.

    On Linux a niceness belongs to each thread: every thread the process has is set, and threads it starts
    later inherit the value from the thread that starts them. When this process leads its session and the
    kernel groups sessions (autogroups), the session's group gets the niceness too (a process that does not
    lead its session leaves the group alone: it holds others). Lowering one's own priority needs no privilege.
    """
    threads = _threads("self")
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))
    group = _lower_autogroup(niceness)
    log.debug("process.niceness", niceness=niceness, threads=len(threads), autogroup=group)
    return os.getpriority(os.PRIO_PROCESS, 0)


def thread_niceness(pid: int | str = "self") -> set[int]:
    """The niceness of each thread of ``pid`` (on Linux every thread has its own), as a set."""
    found = set()
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            found.add(os.getpriority(os.PRIO_PROCESS, tid))
    return found


def _threads(pid: int | str) -> list[int]:
    """The thread ids of ``pid`` (0, the caller, where /proc does not list them)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]


def sessions_grouped() -> bool:
    """Whether the kernel groups sessions for scheduling (autogroups on)."""
    try:
        return _AUTOGROUP_ENABLED.read_text().strip() == "1"
    except OSError:
        return False


def autogroup_niceness(pid: int | str = "self") -> int | None:
    """The niceness of ``pid``'s autogroup; None where the kernel groups no sessions, or where ``pid`` is in no
    session's group of its own (the session of init, and everything in it, is in the root group: the kernel
    shows nothing for it)."""
    if not sessions_grouped():
        return None
    try:
        # "/autogroup-85 nice 0", or nothing at all in the root group
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _lower_autogroup(niceness: int) -> int | None:
    """Give this session's autogroup ``niceness`` when this process leads the session (its group holds nothing
    else); the group's niceness after, or None where there are no autogroups."""
    current = autogroup_niceness()
    if current is None or os.getsid(0) != os.getpid() or niceness <= current:
        return current
    try:
        _AUTOGROUP.write_text(str(niceness))
    except OSError as exc:  # a read-only /proc (some containers): the threads' niceness still stands
        log.debug("process.autogroup_unchanged", error=str(exc))
    return autogroup_niceness()
