"""Only the bus and services/stream touch the NATS client: no other worker or shared
module imports nats-py, reaches for a Bus's connection (`.nc`) or opens JetStream
(`.jetstream`, which the bus hands to services/stream alone).

The SDK, the CLI, the demo and the stack's tooling are NATS clients by nature and may.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"

ALLOWED = {"bus.py", "natsclient.py"}
ALLOWED_PACKAGES = {"stream", "sdk", "cli", "demo", "stack"}


def violations(path: Path) -> list[str]:
    """Where `path` imports nats-py or uses an attribute named `nc` or `jetstream`, as
    `line: what`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Attribute) and node.attr in {"nc", "jetstream"}:
            found.append(f"{node.lineno}: .{node.attr}")
            continue
        else:
            continue
        found += [f"{node.lineno}: import {n}" for n in names if n.split(".")[0] == "nats"]
    return found


def bound_modules() -> list[str]:
    """Every module under services/ that the rule holds for, relative to services/."""
    return sorted(
        rel
        for path in SERVICES.rglob("*.py")
        if (rel := path.relative_to(SERVICES).as_posix()) not in ALLOWED
        and rel.split("/")[0] not in ALLOWED_PACKAGES
    )


def test_the_rule_sees_what_it_must(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import nats\nfrom nats.js import api\nimport nats_extra\n"
        "from services.stream import Follower\nbus.nc.publish\nbus.jetstream(timeout_s=1)\n"
    )
    found = ["1: import nats", "2: import nats.js", "5: .nc", "6: .jetstream"]
    assert sorted(violations(sample)) == found


@pytest.mark.parametrize("module", bound_modules())
def test_no_worker_or_shared_module_touches_nats_py(module: str) -> None:
    assert violations(SERVICES / module) == [], (
        f"services/{module} touches the NATS client: use the Bus (services/bus.py) or "
        "services/stream (follower, writer, replay) instead"
    )
