"""Background work at a lower CPU priority than searches.

On a host whose cores are all busy (a burst of ingest on a small machine), every process gets its fair
share of them, and a search, a millisecond or two of CPU, waits behind batches being parsed, embedded,
indexed and merged. The services that do that work (embedder, indexer, notifier, scheduler, and the
gateway's ingest-body workers) lower their own priority at start (``SEMAFLOW_BACKGROUND_NICE``), so the
scheduler gives the gateway a core first; on an idle host nothing changes, and background work gets
every core searches leave. Containers on one host are weighed by their cgroups' CPU weights instead, so
there the setting orders only the processes of one container.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

__all__ = ["lower_priority"]


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to at least ``niceness`` (never lower it); the niceness it has now.

    On Linux a niceness belongs to each thread: every thread the process has is set, and threads it starts
    later inherit the value from the thread that starts them. Lowering one's own priority needs no privilege.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness <= current:
        return current
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))
        except ProcessLookupError:  # a thread that has just ended
            continue
    log.debug("process.niceness", niceness=niceness, threads=len(threads))
    return os.getpriority(os.PRIO_PROCESS, 0)
