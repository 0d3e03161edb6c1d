"""Runs deploy/blue-green.sh against the recording ``kubectl`` stand-in (tests/deploy/kubectl_standin.py).

No Kubernetes cluster can run where the tests run, so the script's control flow is checked against
a stand-in that records each call and keeps the few facts the script reads. The smoke test itself
is real: deploy/smoke.py runs, through the stand-in's port-forward, against whatever server a test
names for a track's Service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semaflow.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "blue-green.sh"
STANDIN = Path(__file__).with_name("kubectl_standin.py")


@dataclass
class StandInCluster:
    """The stand-in's state and call log in a directory, and a ``kubectl`` on a PATH of its own."""

    directory: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        live: str = "blue",
        deployments: dict[str, str] | None = None,
        upstreams: dict[str, str] | None = None,
        failing_rollouts: tuple[str, ...] = (),
    ) -> StandInCluster:
        """A cluster whose ``gateway`` Service selects ``live``; deployments map names to images."""
        bin_dir = directory / "bin"
        bin_dir.mkdir(parents=True)
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
        kubectl.chmod(0o755)
        state = {
            "selector": live,
            "deployments": deployments if deployments is not None else {"gateway-blue": "semaflow/gateway:0.1.0"},
            "upstreams": upstreams or {},
            "failing_rollouts": list(failing_rollouts),
        }
        (directory / "state.json").write_text(json.dumps(state))
        (directory / "calls.jsonl").write_text("")
        return cls(directory)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / "state.json").read_text())
        return data

    def calls(self) -> list[dict[str, Any]]:
        lines = (self.directory / "calls.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def verbs(self) -> list[str]:
        """Each call as its first two words (``rollout status``, ``patch service`` ...), in order."""
        return [" ".join(call["args"][:2]) for call in self.calls()]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        """Run deploy/blue-green.sh with the stand-in first on PATH (and this interpreter for smoke.py)."""
        full_env = {
            **os.environ,
            "PATH": f"{self.directory / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "KUBECTL_STANDIN_STATE": str(self.directory / "state.json"),
            "KUBECTL_STANDIN_LOG": str(self.directory / "calls.jsonl"),
            "PYTHON": sys.executable,
            "SEMAFLOW_SMOKE_PORT": str(free_port()),
            "SEMAFLOW_ROLLOUT_TIMEOUT": "5s",
            **(env or {}),
        }
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
