// A Node service using node-consul (npm `consul`, not ours) against Baton's gateway:
// it registers itself with a TTL check, passes it until told "stop" on stdin, and
// watches its service with node-consul's blocking-query watcher, printing each change
// as one JSON line: {"index": "<X-Consul-Index>", "ids": {"<service id>": "<status>"}}.
"use strict";
const { client, print } = require("./gateway");

const [port, name, id] = process.argv.slice(2);
const consul = client(port);

async function main() {
  await consul.agent.service.register({
    name,
    id,
    address: "127.0.0.1",
    port: 8001,
    tags: ["node"],
    check: { ttl: "1s" },
  });
  let passing = true;
  const beat = async () => {
    while (passing) {
      await consul.agent.check.pass(`service:${id}`);
      await new Promise((done) => setTimeout(done, 300));
    }
  };
  beat().catch((err) => print({ error: String(err) }));
  process.stdin.on("data", (data) => {
    if (data.toString().includes("stop")) passing = false;
  });
  const watch = consul.watch({
    method: consul.health.service,
    options: { service: name, wait: "30s" },
  });
  watch.on("change", (entries, res) => {
    const ids = {};
    for (const e of entries) {
      const worst = e.Checks.map((c) => c.Status).sort().join(",");
      ids[e.Service.ID] = worst.includes("critical") ? "critical" : "passing";
    }
    print({ index: res.headers["x-consul-index"], ids });
  });
  watch.on("error", (err) => print({ error: String(err) }));
}

main().catch((err) => {
  print({ error: String(err) });
  process.exit(1);
});
