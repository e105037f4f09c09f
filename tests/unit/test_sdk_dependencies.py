"""Installing the SDK pulls only what a service needs: nats-py, msgspec, structlog.

The SDK's modules must import with the collector's, the demo's and the command line's
packages absent: a fresh interpreter is given a finder that refuses them, as a venv
without those extras would.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTRAS_ONLY = ("aiohttp", "influxdb_client", "click")

BLOCKED = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own interpreter and code
        [sys.executable, "-c", BLOCKED + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_the_sdk_imports_without_the_extras() -> None:
    done = run(
        "import schemas, services.sdk, services.bus, services.config, services.runner\n"
        "from services.sdk import ServiceAgent, BalancerClient\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({EXTRAS_ONLY!r}))\n"
        "print('loaded:', loaded)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_the_blocker_does_block_what_needs_an_extra() -> None:
    # Without this, the test above could pass with a finder that blocks nothing.
    done = run("import services.collector")
    assert done.returncode == 1
    assert "No module named 'aiohttp" in done.stderr


def test_baton_without_the_cli_extra_says_what_to_install() -> None:
    done = run("from services.cli import main; main()")
    assert done.returncode == 1
    assert done.stderr.strip() == "baton: the command line needs click: pip install 'baton[cli]'"


def test_the_dependencies_are_the_sdks_and_the_rest_are_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0] for dep in project["dependencies"]}
    assert names == {"nats-py", "msgspec", "structlog"}
    extras = project["optional-dependencies"]
    assert any(d.startswith("influxdb-client") for d in extras["collector"])
    assert any(d.startswith("aiohttp") for d in extras["collector"])
    assert any(d.startswith("aiohttp") for d in extras["demo"])
    assert any(d.startswith("click") for d in extras["cli"])
    assert "baton[stack]" in extras["dev"]
    assert "baton[collector,demo,gateway,cli,prober]" in extras["stack"]
    assert {d.split(">")[0] for d in extras["prober"]} == {
        "aiohttp",
        "grpcio",
        "grpcio-health-checking",
    }
    assert any(d.startswith("dnspython") for d in extras["gateway"])
