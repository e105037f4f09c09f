// A Baton client in Node.js, with nothing but a NATS client (nats.js) and JSON.
//
// It registers an instance, heartbeats, lists the service's instances, resolves an
// endpoint, reports the call, reads the service's config, shows how an error reply
// reads, and deregisters. Each step prints one JSON line: {"step", ...what it got}.
//
//   npm install && NATS_URL=nats://127.0.0.1:4222 node client.mjs [service] [instance]
//
// The subjects, fields and error headers are those of docs/contract.md.
import { connect } from "nats";

const NATS_URL = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const SERVICE = process.argv[2] ?? "node-example";
const INSTANCE = process.argv[3] ?? "node-1";
const PORT = Number(process.env.EXAMPLE_PORT ?? 9000);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// An error reply of the contract: headers Nats-Service-Error-Code and Nats-Service-Error,
// body {"code", "message"}.
class BatonError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function print(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

async function request(nc, subject, body = {}) {
  let reply;
  try {
    reply = await nc.request(subject, encoder.encode(JSON.stringify(body)), { timeout: 2000 });
  } catch (err) {
    if (err.code === "503") {
      // NATS's own "no responders": no worker serves this subject right now
      throw new BatonError(503, `nothing serves ${subject}; is the worker running?`);
    }
    throw err;
  }
  const code = reply.headers?.get("Nats-Service-Error-Code");
  if (code) {
    const message = reply.headers.get("Nats-Service-Error") || JSON.parse(decoder.decode(reply.data)).message;
    throw new BatonError(Number(code), message);
  }
  return JSON.parse(decoder.decode(reply.data));
}

function publish(nc, subject, body) {
  nc.publish(subject, encoder.encode(JSON.stringify(body)));
}

// The balancer learns of a new instance from the registry's event, a moment after the
// registration's Ack: a fresh instance may be answered 404 or 503 for that moment.
async function resolve(nc, service, body = {}, patienceMs = 3000) {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    try {
      return await request(nc, `balancer.v1.resolve.${service}`, body);
    } catch (err) {
      if (!(err instanceof BatonError) || ![404, 503].includes(err.code) || Date.now() > deadline) {
        throw err;
      }
      await new Promise((done) => setTimeout(done, 50));
    }
  }
}

const nc = await connect({ servers: NATS_URL, name: "baton-node-example" });
try {
  const ack = await request(nc, `registry.v1.register.${SERVICE}`, {
    instance_id: INSTANCE,
    host: "127.0.0.1",
    port: PORT,
    zone: "local",
    version: "1.0.0",
    metadata: { lang: "node" },
    ttl_s: 10,
  });
  print("register", { ack });

  const beat = await request(nc, `registry.v1.heartbeat.${SERVICE}`, {
    instance_id: INSTANCE,
    inflight: 0,
  });
  print("heartbeat", { ack: beat });

  const list = await request(nc, `registry.v1.instances.${SERVICE}`);
  print("instances", {
    instances: list.instances.map((i) => ({ instance_id: i.instance_id, healthy: i.healthy, metadata: i.metadata })),
    epoch: list.epoch,
    settled: list.settled,
  });

  const started = performance.now();
  const endpoint = await resolve(nc, SERVICE);
  print("resolve", { endpoint });

  // ... call http://endpoint.host:endpoint.port here, then say how it went:
  const report = {
    instance_id: endpoint.instance_id,
    latency_ms: performance.now() - started,
    ok: true,
    pick: endpoint.pick,
  };
  publish(nc, `balancer.v1.report.${SERVICE}`, report);
  await nc.flush();
  print("report", { report });

  const config = await request(nc, `governor.v1.config.${SERVICE}`);
  print("config", { config });

  try {
    await request(nc, `registry.v1.register.${SERVICE}`, { instance_id: INSTANCE, host: "127.0.0.1", port: 70000 });
    print("error", { code: null, message: "a port of 70000 was accepted" });
  } catch (err) {
    if (!(err instanceof BatonError)) throw err;
    print("error", { code: err.code, message: err.message });
  }

  const bye = await request(nc, `registry.v1.deregister.${SERVICE}`, { instance_id: INSTANCE });
  print("deregister", { ack: bye });
} finally {
  await nc.drain();
}
