// node-consul (npm `consul`, not ours) watching one key of Baton's config center through
// the gateway's /v1/kv with its blocking-query watcher: each change is printed as one JSON
// line, {"index": "<X-Consul-Index>", "value": "<the value, decoded>"} (null: absent).
"use strict";
const { client, print } = require("./gateway");

const [port, key] = process.argv.slice(2);
const consul = client(port);

const watch = consul.watch({ method: consul.kv.get, options: { key, wait: "30s" } });
watch.on("change", (pair, res) => {
  const value = pair ? pair.Value : null; // node-consul decodes Consul's base64 itself
  print({ index: res.headers["x-consul-index"], value });
});
watch.on("error", (err) => print({ error: String(err) }));
