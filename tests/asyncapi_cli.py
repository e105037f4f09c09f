"""The AsyncAPI CLI (`@asyncapi/cli` from npm), installed once under .baton/, never phoning home.

    python tests/asyncapi_cli.py docs/asyncapi.yaml   # install if missing, then validate

`just contract` and tests/unit/test_contract.py both run it this way. The CLI sends
usage data to its makers unless told not to, and checks npm for a newer version on
every run: its analytics file is written here (disabled) before it first runs, and the
environment switches off both, so no run sends anything anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["CACHE", "PACKAGES", "cli_env", "ensure_cli", "missing_node", "offline", "validate"]

# The CLI, and what the tests read the documents back with: js-yaml (the CLI's own YAML
# parser) and ajv (a JSON Schema validator nobody here wrote, for the 2020-12 schemas).
PACKAGES: Final = ("@asyncapi/cli@6", "js-yaml@4", "ajv@8", "ajv-formats@3")
ROOT: Final = Path(__file__).resolve().parent.parent
CACHE: Final = ROOT / ".baton" / "asyncapi-cli"


def missing_node() -> str:
    """Why the CLI cannot run here ("" when node and npm are installed)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else ""


def cli_env(cache: Path = CACHE) -> dict[str, str]:
    """The environment every CLI run gets: no analytics, no update check."""
    config = cache / "analytics.json"
    if not config.exists():  # the CLI would create it with analytics on, and send
        cache.mkdir(parents=True, exist_ok=True)
        config.write_text(
            json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "baton"})
        )
    return {
        **os.environ,
        "ASYNCAPI_METRICS_CONFIG_PATH": str(config),
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",  # oclif's warn-if-update-available
        "CI": "true",  # the CLI also records nothing under CI
        # node-config, inside the CLI: it ships no config dir, which is fine
        "SUPPRESS_NO_CONFIG_WARNING": "true",
        "SUPPRESS_STRICTNESS_CHECK": "true",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",  # npm's own check for a newer npm
    }


def ensure_cli(cache: Path = CACHE) -> Path:
    """The `asyncapi` executable, installed into `cache` the first time (about 80 s).

    `cache/node_modules` also holds the other PACKAGES; they are installed again only
    when that list changes.
    """
    binary = cache / "node_modules" / ".bin" / "asyncapi"
    marker = cache / "installed.json"
    wanted = json.dumps(PACKAGES)
    if not binary.exists() or not marker.exists() or marker.read_text() != wanted:
        npm = shutil.which("npm") or "npm"
        subprocess.run(  # noqa: S603  # fixed arguments
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", *PACKAGES],
            check=True,
            env=cli_env(cache),
            stdout=subprocess.DEVNULL,
        )
        marker.write_text(wanted)
        subprocess.run(  # noqa: S603  # and, as its makers say to, analytics off for good
            [str(binary), "config", "analytics", "--disable"],
            check=True,
            env=cli_env(cache),
            stdout=subprocess.DEVNULL,
        )
    return binary


def offline() -> list[str]:
    """A command prefix that runs a program with no network at all, where Linux allows it.

    `unshare -rn` gives the program a network namespace of its own with no interface: a
    proof, not a promise, that it sends nothing. Empty where unshare is not permitted.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "-rn", "true"], check=False, capture_output=True)  # noqa: S603
    return [unshare, "-rn"] if probe.returncode == 0 else []


def validate(
    document: Path, cache: Path = CACHE, *, network: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `asyncapi validate <document> --fail-severity error`; the finished process.

    With `network=False` the validation runs without a network where `offline()` can.
    """
    binary = ensure_cli(cache)
    prefix = [] if network else offline()
    return subprocess.run(  # noqa: S603  # fixed arguments
        [*prefix, str(binary), "validate", str(document), "--fail-severity", "error"],
        check=False,
        env=cli_env(cache),
        capture_output=True,
        text=True,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python tests/asyncapi_cli.py DOCUMENT\n")
        return 2
    if why := missing_node():
        sys.stderr.write(f"cannot validate {argv[0]}: {why} (apt-get install nodejs npm)\n")
        return 2
    done = validate(Path(argv[0]), network=False)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
