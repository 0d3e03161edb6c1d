"""A recording stand-in for ``kubectl``, for testing deploy/blue-green.sh where no cluster can run.

It is NOT a Kubernetes emulation: it knows just the commands the script sends, keeps the little
state they touch (the live Service's track selector, which gateway Deployments exist and the
other objects applied with them, which rollouts fail) in a JSON file, and appends every call to
a JSON-lines log so a test can check the order of events. ``port-forward service/NAME
LOCAL:REMOTE`` relays 127.0.0.1:LOCAL to the address the state gives for NAME (a real server: the
smoke test makes real requests through it).

Environment: KUBECTL_STANDIN_STATE (the state file), KUBECTL_STANDIN_LOG (the call log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml


def _strip_namespace(args: list[str]) -> tuple[str | None, list[str]]:
    namespace, rest, i = None, [], 0
    while i < len(args):
        if args[i] in ("--namespace", "-n"):
            namespace, i = args[i + 1], i + 2
        elif args[i].startswith("--namespace="):
            namespace, i = args[i].split("=", 1)[1], i + 1
        else:
            rest.append(args[i])
            i += 1
    return namespace, rest


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


async def _relay(local_port: int, upstream: str) -> None:
    host, port = upstream.rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", local_port)
    print(f"Forwarding from 127.0.0.1:{local_port} -> {upstream}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def _apply(state: dict[str, Any], call: dict[str, Any]) -> None:
    documents = [d for d in yaml.safe_load_all(sys.stdin.read()) if d]
    call["applied"] = documents
    for doc in documents:
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        if kind == "deployment":
            state["deployments"][name] = doc["spec"]["template"]["spec"]["containers"][0]["image"]
        else:
            state.setdefault("others", {}).setdefault(kind, []).append(name)
        print(f"{kind}/{name} configured")


def _delete(state: dict[str, Any], kinds: str, name: str) -> None:
    """``delete KIND[,KIND...] NAME``: what the stand-in keeps of those kinds under that name goes."""
    for kind in kinds.split(","):
        if kind == "deployment":
            state["deployments"].pop(name, None)
        elif name in state.get("others", {}).get(kind, []):
            state["others"][kind].remove(name)


def _rollout_status(state: dict[str, Any], name: str) -> int:
    if name not in state["deployments"] or name in state["failing_rollouts"]:
        print(f'error: deployment "{name}" exceeded its progress deadline', file=sys.stderr)
        return 1
    print(f'deployment "{name}" successfully rolled out')
    return 0


def _answer(args: list[str], state: dict[str, Any], call: dict[str, Any]) -> int:
    """Answer one call, changing ``state`` as the cluster would; returns the exit status."""
    if args[:1] == ["apply"] and args[1:] == ["-f", "-"]:
        _apply(state, call)
    elif args[:3] == ["get", "service", "gateway"]:
        print(state["selector"], end="")
    elif args[:2] == ["get", "deployment"] and len(args) == 3:
        if args[2] not in state["deployments"]:
            print(f'Error from server (NotFound): deployments.apps "{args[2]}" not found', file=sys.stderr)
            return 1
    elif args[:2] == ["get", "deployments"]:
        for name, image in state["deployments"].items():
            print(f"{name} {image}")
    elif args[:2] == ["rollout", "status"]:
        return _rollout_status(state, args[2].removeprefix("deployment/"))
    elif args[:3] == ["patch", "service", "gateway"]:
        state["selector"] = json.loads(args[args.index("-p") + 1])["spec"]["selector"]["track"]
    elif args[:1] == ["delete"] and args[1].split(",")[0] == "deployment":
        _delete(state, args[1], args[2])
    else:
        print(f"kubectl stand-in: unknown command {args}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    state_path = Path(os.environ["KUBECTL_STANDIN_STATE"])
    state: dict[str, Any] = json.loads(state_path.read_text())
    namespace, args = _strip_namespace(sys.argv[1:])
    call: dict[str, Any] = {"namespace": namespace, "args": args}
    if args[:1] == ["port-forward"]:
        _log(call)
        local = int(args[2].split(":")[0])
        asyncio.run(_relay(local, state["upstreams"][args[1].removeprefix("service/")]))
        return 0
    call["rc"] = _answer(args, state, call)
    state_path.write_text(json.dumps(state))
    _log(call)
    return int(call["rc"])


def _log(call: dict[str, Any]) -> None:
    with Path(os.environ["KUBECTL_STANDIN_LOG"]).open("a") as fh:
        fh.write(json.dumps(call) + "\n")


if __name__ == "__main__":
    sys.exit(main())
