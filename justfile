# Baton's task runner: people and CI call the same recipes. `just --list` shows them.

# The project's venv when there is one, else whatever python3 is on PATH.
python := if path_exists(justfile_directory() / ".venv/bin/python") == "true" { justfile_directory() / ".venv/bin/python" } else { "python3" }

# list the recipes
default:
    @{{just_executable()}} --list

# run the local stack: nats-server (JetStream), registry, balancer; Ctrl-C stops it
[group('run')]
up *args: influxd
    exec "{{python}}" -m services.stack up {{args}}

# the stack on a 3-node NATS cluster, two replicas of every worker (`just demo --cluster`
# adds the fleet; --chaos or DEMO_CHAOS=1 kills and restarts a node or replica every 10 s)
[group('run')]
cluster *args: influxd
    exec "{{python}}" -m services.stack.cluster up {{args}}

# the stack plus a demo fleet and its live table (DEMO_* settings, see services/demo)
[group('run')]
demo *args: influxd
    exec "{{python}}" -m services.stack demo {{args}}

# lint and types, then every test (pytest's summary is the last line, for CI)
[group('check')]
test *args: influxd
    "{{python}}" -m ruff check .
    "{{python}}" -m mypy
    "{{python}}" -m pytest -q {{args}}

# the InfluxDB server the collector's tests run (Debian's 1.6.7), where it is missing
[group('check')]
influxd:
    command -v influxd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb)

# lint, format check and types, without tests
[group('check')]
lint:
    "{{python}}" -m ruff check .
    "{{python}}" -m ruff format --check .
    "{{python}}" -m mypy

# format and apply safe lint fixes
[group('check')]
fmt:
    "{{python}}" -m ruff format .
    "{{python}}" -m ruff check --fix .

# benchmarks, one table of ratios against baselines from the same run (--quick, --only resolve,sim)
[group('check')]
bench *args: influxd
    "{{python}}" -c "import matplotlib" 2>/dev/null || "{{python}}" -m pip install -q -e '.[bench]'
    MYPYPATH=tests:tests/unit "{{python}}" -m mypy --strict tests/bench
    "{{python}}" tests/bench/run.py {{args}}

# run every dashboard query against a live InfluxDB (INFLUX_URL), e.g. while `just demo` runs
[group('check')]
check-dashboards:
    "{{python}}" tests/check_dashboards.py
