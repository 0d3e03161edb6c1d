"""Background services lower their own CPU priority: every thread, those started before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.priority import lower_priority

# Run in a child: a niceness once raised cannot be lowered again without privilege. (The test runner's own
# niceness is below 3 wherever these tests run.)
CHILD = """
import json, os, threading
from shared.priority import lower_priority

def niceness_of_threads():
    return sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")})

stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
first = lower_priority(6)
after = threading.Thread(target=stop.wait); after.start()
seen = niceness_of_threads()
again = lower_priority(3)  # never lowers it back
stop.set(); before.join(); after.join()
print(json.dumps({"first": first, "threads": seen, "again": again, "now": os.getpriority(os.PRIO_PROCESS, 0)}))
"""


def test_every_thread_gets_the_niceness_and_it_is_never_lowered() -> None:
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"first": 6, "threads": [6], "again": 6, "now": 6}


def test_asking_for_no_more_than_the_current_niceness_changes_nothing() -> None:
    current = os.getpriority(os.PRIO_PROCESS, 0)
    assert lower_priority(current) == current == os.getpriority(os.PRIO_PROCESS, 0)
