"""Run every query of every dashboard against a live InfluxDB, as Grafana would.

    INFLUX_URL=http://127.0.0.1:8086 just check-dashboards
    (by hand: PYTHONPATH=tests:tests/integration python tests/check_dashboards.py)

Variables are set to "All". Prints one line per query (rows returned, or the error) and
exits 1 if any query fails or returns nothing: with the demo running for a minute or two,
every panel should show data.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request

from test_dashboards import ALL_QUERIES, SCENARIOS, render


def run(url: str, query: str) -> tuple[int, str]:
    params = urllib.parse.urlencode({"db": "baton", "q": query, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as reply:  # noqa: S310
        result = json.loads(reply.read())["results"][0]
    if "error" in result:
        return -1, result["error"]
    return sum(len(s.get("values", [])) for s in result.get("series", [])), ""


def main() -> int:
    url = os.environ.get("INFLUX_URL", "http://127.0.0.1:8086")
    bad = 0
    for q in ALL_QUERIES:
        n, error = run(url, render(q.query, SCENARIOS["all"]))
        state = f"ERROR {error}" if error else ("EMPTY" if n == 0 else f"{n} rows")
        bad += n <= 0
        print(f"{state:>10}  {q.id}")
    print(f"{len(ALL_QUERIES) - bad} of {len(ALL_QUERIES)} queries returned data from {url}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
