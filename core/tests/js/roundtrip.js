// MQTT.js under node: connect to argv[2] (ws:// or wss://, trusting the CA file argv[3]),
// subscribe, publish, and print the message it gets back as one JSON line.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const [url, ca] = process.argv.slice(2);
const options = { protocolVersion: 5, clientId: "mqttjs-" + Math.random().toString(16).slice(2) };
if (ca) {
  options.ca = fs.readFileSync(ca);
  options.rejectUnauthorized = true;
}
function fail(error) {
  console.log(JSON.stringify({ error: String(error) }));
  process.exit(1);
}
const client = mqtt.connect(url, options);
const timer = setTimeout(() => fail("timeout"), 8000);
client.on("error", fail);
client.on("connect", () => {
  client.subscribe("js/echo", { qos: 1 }, (err) => {
    if (err) fail(err);
    client.publish("js/echo", "hello from MQTT.js", { qos: 1 });
  });
});
client.on("message", (topic, payload) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ topic, payload: payload.toString() }));
  client.end(false, () => process.exit(0));
});
