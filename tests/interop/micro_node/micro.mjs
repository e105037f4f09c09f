// nats.js's own NATS services (ADR-32) implementation and client, against Baton's workers.
//   node micro.mjs read NAME   every ping, info and stats reply for NAME, as nats.js read them
//   node micro.mjs serve NAME  a nats.js service NAME (endpoint `echo` on js.echo), until stdin ends
import { connect } from "nats";

const [mode, name] = process.argv.slice(2);
const nc = await connect({ servers: process.env.NATS_URL });

async function all(iter) {
  const out = [];
  for await (const reply of await iter) out.push(reply);
  return out;
}

if (mode === "read") {
  const client = nc.services.client({ maxWait: 1000 });
  const result = {
    ping: await all(client.ping(name)),
    info: await all(client.info(name)),
    stats: await all(client.stats(name)),
  };
  process.stdout.write(JSON.stringify(result) + "\n");
} else if (mode === "serve") {
  const service = await nc.services.add({ name, version: "1.2.3", description: "nats.js" });
  service.addEndpoint("echo", {
    subject: "js.echo",
    handler: (err, msg) => msg.respond(msg.data),
  });
  await nc.flush();
  process.stdout.write("ready\n");
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on("end", resolve));
  await service.stop();
} else {
  process.stderr.write("usage: node micro.mjs read|serve NAME\n");
  process.exit(2);
}
await nc.drain();
