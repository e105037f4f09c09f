// A Node service using node-consul (npm `consul`, not ours) against Baton's gateway: it
// registers itself with an HTTP check (as Spring Cloud Consul does, on its health URL)
// and watches its service's passing instances with node-consul's blocking-query watcher,
// printing each answer as one JSON line: {"passing": ["<service id>", ...]}.
"use strict";
const { client, print } = require("./gateway");

const [port, name, id, servicePort, healthUrl] = process.argv.slice(2);
const consul = client(port);

async function main() {
  await consul.agent.service.register({
    name,
    id,
    address: "127.0.0.1",
    port: Number(servicePort),
    check: { http: healthUrl, interval: "200ms", timeout: "1s" },
  });
  print({ registered: id });
  const watch = consul.watch({
    method: consul.health.service,
    options: { service: name, passing: true, wait: "30s" },
  });
  watch.on("change", (entries) => print({ passing: entries.map((e) => e.Service.ID) }));
  watch.on("error", (err) => print({ error: String(err) }));
}

main().catch((err) => {
  print({ error: String(err) });
  process.exit(1);
});
