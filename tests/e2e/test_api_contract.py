"""The API as a client meets it on a running stack: its OpenAPI contract (schemathesis), keys from the CLI, limits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

# Limits on, with quotas schemathesis cannot exhaust (the development tenant has none at all; a tenant
# the CLI makes gets these).
ROOMY = {
    "SEMAFLOW_RATE_LIMIT_ENABLED": "true",
    **{
        f"SEMAFLOW_RATE_LIMIT_{name}": "1000000"
        for name in (
            "PER_DAY",
            "PER_HOUR",
            "BULK_PER_MINUTE",
            "SINGLE_PER_MINUTE",
            "SEARCH_PER_MINUTE",
            "SEARCH_PER_HOUR",
            "SEARCH_PER_DAY",
            "READ_PER_MINUTE",
            "READ_PER_HOUR",
        )
    },
}
# Examples per operation and phase: enough to reach every status path, a couple of minutes in all.
MAX_EXAMPLES = 25
SEED = 20261123
# The stateful phase follows the document's links (and those schemathesis infers) from call to call:
# scenarios of up to 10 calls, with valid data only, so that a chain gets past its first step.
STATEFUL = """
[phases.stateful]
max-steps = 10

[phases.stateful.generation]
max-examples = 200
mode = "positive"
"""


@dataclass
class Running:
    stack: Stack
    data_dir: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("contract") / "data"
    stack = start_stack(data_dir, extra_env=ROOMY)
    yield Running(stack, data_dir)
    code = stack.stop()
    assert code == 0, stack.logs()


def _request(
    stack: Stack, method: str, path: str, key: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, dict(err.headers), json.loads(raw) if raw else None


def _cli(running: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semaflow", *args, "--data-dir", str(running.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_development_key_is_an_admin_key(running: Running) -> None:
    status, headers, body = _request(running.stack, "GET", "/v1/queues", running.stack.api_key)
    assert status == 200 and set(body["queues"]) == {"embed", "index", "notify"}
    # The development tenant has no rate limits, so no window to report.
    assert "RateLimit-Policy" not in headers and "RateLimit" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Request-ID"]


def test_keys_made_with_the_cli_work_against_the_stack_until_revoked(running: Running) -> None:
    made = _cli(running, "keys", "create", "--tenant", "initech", "--role", "reader", "--name", "dashboards")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["tenant"] == "initech" and created["role"] == "reader" and created["id"].startswith("key_")
    key = created["key"]

    status, _, body = _request(running.stack, "GET", "/v1/collections", key)
    assert status == 200 and body == {"collections": []}
    assert _request(running.stack, "PUT", "/v1/collections/reports", key)[0] == 403  # a reader does not write

    listed = _cli(running, "keys", "list", "--tenant", "initech")
    assert listed.returncode == 0 and key not in listed.stdout
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [created["id"]]

    limited = _cli(running, "limits", "set", "--tenant", "initech", "--per-hour", "5000")
    assert limited.returncode == 0, limited.stderr
    assert json.loads(limited.stdout)["effective"]["per_hour"] == 5000
    _, headers, _ = _request(running.stack, "GET", "/v1/collections", key)
    assert '"hour";q=5000;w=3600' in headers["RateLimit-Policy"]

    assert _cli(running, "keys", "revoke", created["id"]).returncode == 0
    assert _request(running.stack, "GET", "/v1/collections", key)[0] == 401
    assert _cli(running, "keys", "revoke", created["id"]).returncode == 1


@pytest.mark.timeout(960)  # the run itself is bounded at 900 s below; the suite's default is 300 s
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(running: Running, tmp_path: Path) -> None:
    stack = running.stack
    # A collection whose name the generator tries first, so documents and searches get past the 404.
    assert _request(stack, "PUT", "/v1/collections/0", stack.api_key)[0] == 201
    _, _, listed = _request(stack, "GET", "/v1/keys", stack.api_key)
    (own,) = [k["id"] for k in listed["keys"] if k["name"] == "development key"]
    hooks = {
        "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py")),
        "SEMAFLOW_CONTRACT_KEY_ID": own,
        "SEMAFLOW_CONTRACT_URL": stack.url,
        "SEMAFLOW_CONTRACT_API_KEY": stack.api_key,
    }
    st = Path(sys.executable).parent / "st"
    config = tmp_path / "schemathesis.toml"
    config.write_text(STATEFUL)
    command = [
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{stack.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {stack.api_key}",
        "--checks",
        "all",
        # A valid request may still be refused for the state it meets (an id that does not exist, a job
        # that already finished): acceptance of valid input is what the other tests check.
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: with several, anyio's lazy imports compile ASTs in schemathesis's threads at once,
        # which CPython 3.11.7 can fail ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--request-retries",
        "2",
        "--no-color",
    ]
    env = {**os.environ, **hooks}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    out = result.stdout
    start = min(
        (i for i in (out.find("= ERRORS ="), out.find("= FAILURES =")) if i >= 0), default=max(0, len(out) - 30_000)
    )
    report = out[start : start + 30_000] + result.stderr[-5_000:]
    assert result.returncode == 0, report
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases and int(cases.group(2)) > 0, report
    print(out[-3_000:])  # the summary, shown with -s
