// Runs the web client (clients/js/vdh-client.js) under Node 20 against a
// real edge, then prints what it saw as one JSON line for the Rust test.
// Usage: node js_client_check.mjs EDGE_URL JWKS_JSON
// Node 18 (Debian 12's) has WebCrypto only as node:crypto's webcrypto;
// Node 19+ and browsers have it as the global `crypto`.
if (!globalThis.crypto?.subtle) globalThis.crypto = (await import("node:crypto")).webcrypto;
const { VdhClient, Keys, Rejected, b64urlEncode } = await import("../../clients/js/vdh-client.js");

const [edge, jwks] = process.argv.slice(2);
const seen = [];
const client = new VdhClient({
  edge,
  service: "vdh-api",
  sdkVersion: "1.0.0",
  clientId: "node-1",
  platform: "web",
  jwks,
  longPollS: 5,
  backoffMs: [100, 400],
});
for (const t of ["accepted", "tokeninvalidated", "rejected", "unreachable", "updaterecommended"]) {
  client.addEventListener(t, (e) => seen.push({ type: t, ...e.detail }));
}
const first = new Promise((r) => client.addEventListener("accepted", r, { once: true }));
await client.start();
await first;
const doc = client.document;
// The same checks on a tampered copy of the answer, through the client's keys.
const resp = await fetch(`${edge}/v1/config/vdh-api?sdk_version=1.0.0&client_id=node-1`);
const body = new Uint8Array(await resp.arrayBuffer());
const sig = resp.headers.get("x-jws-signature");
const keys = new Keys(jwks);
const verdicts = {};
await keys.verify(sig, body).then(() => (verdicts.good = "ok"), (e) => (verdicts.good = e.kind));
const flipped = body.slice();
flipped[20] ^= 1;
await keys.verify(sig, flipped).then(() => (verdicts.flipped = "ok"), (e) => (verdicts.flipped = e.kind));
const other = await fetch(`${edge}/v1/config/vdh-api?sdk_version=1.0.0&client_id=node-2`);
const otherBody = new Uint8Array(await other.arrayBuffer());
await client
  .verified(otherBody, other.headers.get("x-jws-signature"), null)
  .then(() => (verdicts.swapped = "ok"), (e) => (verdicts.swapped = e instanceof Rejected ? e.kind : String(e)));
const resolved = await client.resolve("vdh-api.yingzi.com");
client.stop();
console.log(JSON.stringify({ environment: doc.environment, epoch: doc.auth.epoch, verdicts, resolved, seen, b64: b64urlEncode(new Uint8Array([251, 255])) }));
