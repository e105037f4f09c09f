// What the node-consul scripts share: a node-consul client of Baton's gateway on
// 127.0.0.1:<port>, and the one JSON object a line they print for the test to read.
"use strict";
const Consul = require("consul");

const client = (port) => new Consul({ host: "127.0.0.1", port: Number(port) });
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

module.exports = { client, print };
