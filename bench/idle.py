"""Idle benchmark: the CPU an idle stack spends per second, by service, against another revision's in the same run.

Run by hand (not pytest)::

    .venv/bin/python bench/idle.py                                   # this tree's stack alone
    .venv/bin/python bench/idle.py --reference-rev HEAD~2 --rounds 2  # and that revision's, alternating

An idle ``semaflow up`` (no collection, nothing queued) still runs its workers' waits, its scheduler's
passes, its notifier's dispatcher, heartbeats and Redis. Each round starts the stack, waits until its
query model is loaded and its CPU has settled, rests ``--rest`` seconds more, then reads every
service's CPU time (``/proc``, user + system, with its children) over ``--window`` seconds. With
``--reference-rev`` (exported with ``git archive``; its ``semaflow up`` runs that code) the two trees
alternate, one stack at a time, and the ratio is printed per round: reference / this tree. No ratio is
printed for a round where this tree's stack used more CPU than the reference: then this tree is not
the cheaper one, whatever the reason, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import log, table


async def measure(tree: Path, rest_s: float, window_s: float) -> dict[str, float]:
    """Milliseconds of CPU per second of each service of an idle stack of ``tree`` (and ``total``)."""
    stack = common.Stack(cwd=tree).start()
    try:
        async with common.session(connections=2) as http:
            await stack.wait_idle(http)
        await asyncio.sleep(rest_s)
        before, t0 = stack.cpu_by_service(), time.monotonic()
        await asyncio.sleep(window_s)
        after, elapsed = stack.cpu_by_service(), time.monotonic() - t0
    finally:
        stack.stop()
    per_s = {name: (after[name] - before.get(name, after[name])) / elapsed * 1000 for name in after}
    per_s["total"] = sum(per_s.values())
    return per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-rev", default=None, help="also measure the stack of this git revision")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each tree once per round; default 1)")
    parser.add_argument("--rest", type=float, default=15.0, help="seconds of rest once settled (default 15)")
    parser.add_argument("--window", type=float, default=40.0, help="seconds measured (default 40)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="semaflow-idle-"))
    try:
        trees = [("this tree", common.REPO)]
        if args.reference_rev:
            trees.append((f"rev {args.reference_rev}", common.export_tree(args.reference_rev, root)))
        rounds: list[dict[str, dict[str, float]]] = []
        for n in range(args.rounds):
            order = trees if n % 2 == 0 else trees[::-1]  # alternate which goes first
            found = {}
            for label, tree in order:
                found[label] = asyncio.run(measure(tree, args.rest, args.window))
                log(f"round {n + 1}, {label}: {found[label]['total']:.1f} ms of CPU per second")
            rounds.append(found)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    services = [name for name in rounds[0][trees[0][0]] if name != "total"]
    print()
    print(f"idle stack: CPU ms per second by service, over {args.window:.0f} s after {args.rest:.0f} s of rest")
    print()
    rows: list[list[Any]] = []
    for n, found in enumerate(rounds, 1):
        for label, per_s in found.items():
            rows.append([f"round {n}, {label}", *(per_s.get(s, 0.0) for s in services), per_s["total"]])
    print(table(["stack", *services, "total"], rows))
    ratios: list[float] = []
    if args.reference_rev:
        print()
        ref_label = trees[1][0]
        for n, found in enumerate(rounds, 1):
            new, old = found["this tree"]["total"], found[ref_label]["total"]
            if new > old:
                print(f"  round {n}: no ratio: this tree used more CPU than {ref_label} ({new:.1f} > {old:.1f} ms/s)")
                continue
            ratios.append(old / new)
            print(f"  round {n}: {ref_label} / this tree = {old / new:.2f}x CPU per idle second")
    common.write_json(
        args.json, {"rounds": rounds, "ratios": ratios, "window_s": args.window, "environment": common.environment()}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
