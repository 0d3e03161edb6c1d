"""Background services lower their own CPU priority: every thread, those started before and after, and their
session's scheduling group where the kernel groups sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.priority import autogroup_niceness, lower_priority, sessions_grouped

# Run in a child: a niceness once raised cannot be lowered again without privilege. (The test runner's own
# niceness is below 3 wherever these tests run.)
CHILD = """
import json, os, threading
from shared.priority import autogroup_niceness, lower_priority, thread_niceness

stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
first = lower_priority(6)
after = threading.Thread(target=stop.wait); after.start()
seen = sorted(thread_niceness())
again = lower_priority(3)  # never lowers it back
stop.set(); before.join(); after.join()
print(json.dumps({
    "first": first, "threads": seen, "again": again, "now": os.getpriority(os.PRIO_PROCESS, 0),
    "leader": os.getsid(0) == os.getpid(), "group": autogroup_niceness(),
}))
"""
ROOT = Path(__file__).resolve().parents[3]


def _child(session: str) -> dict[str, object]:
    """Run CHILD in the runner's session ("shared") or in one of its own ("own", as ``semaflow up`` starts
    each service)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=session == "own",
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_thread_gets_the_niceness_and_it_is_never_lowered() -> None:
    seen = _child("shared")
    assert {k: seen[k] for k in ("first", "threads", "again", "now")} == {
        "first": 6,
        "threads": [6],
        "again": 6,
        "now": 6,
    }


def test_a_session_leader_sets_its_groups_niceness_and_a_process_of_anothers_session_never() -> None:
    ours = autogroup_niceness()
    # A child that shares the runner's session leaves the session's group as it is (it holds the runner too),
    shared = _child("shared")
    assert shared["leader"] is False and shared["group"] == ours == autogroup_niceness()
    # and one that leads a session of its own gives its group the niceness, where the kernel groups sessions
    # (whether or not the runner's own session has a group: one started under init's session is in the root
    # group, which shows no niceness).
    own = _child("own")
    assert own["leader"] is True and own["now"] == 6
    assert own["group"] == (6 if sessions_grouped() else None)


def test_asking_for_no_more_than_the_current_niceness_changes_nothing() -> None:
    current = os.getpriority(os.PRIO_PROCESS, 0)
    assert lower_priority(current) == current == os.getpriority(os.PRIO_PROCESS, 0)
