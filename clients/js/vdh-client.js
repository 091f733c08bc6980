// vdh-client.js — the reference web client of vdh-edge: one dependency-free
// ES module for browsers and Node 19+ (fetch, WebCrypto Ed25519, and
// localStorage when there is one); on Node 18 set
// `globalThis.crypto = (await import("node:crypto")).webcrypto` first. It follows docs/sdk.md step by step:
// start from the stored document, long-poll with If-None-Match and wait,
// verify every answer (detached JWS, service, client id, expiry, never
// older), keep the last good document when one is refused, back off with
// full jitter, and raise events.

// CustomEvent is global from Node 19; a small stand-in elsewhere.
const CustomEventImpl =
  globalThis.CustomEvent ??
  class extends Event {
    constructor(type, init) {
      super(type);
      this.detail = init?.detail;
    }
  };

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Base64url without padding. */
export function b64urlEncode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(text) {
  const s = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(s + "===".slice((s.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Why an answer was refused; `kind` is one of the names below. */
export class Rejected extends Error {
  constructor(kind, detail = "") {
    super(detail ? `${kind}: ${detail}` : kind);
    this.kind = kind; // unsigned | malformed | unknown_key | bad_signature | not_a_document | wrong_client | wrong_service | expired | no_validity | older
  }
}

/** Pinned public keys (a JWKS of Ed25519 OKP keys). */
export class Keys {
  constructor(jwks) {
    const keys = (typeof jwks === "string" ? JSON.parse(jwks) : jwks).keys || [];
    this.jwks = keys.filter((k) => k.kty === "OKP" && k.crv === "Ed25519");
    if (this.jwks.length === 0) throw new Error("no Ed25519 key in the JWKS");
    this.imported = new Map();
  }

  get kids() {
    return this.jwks.map((k) => k.kid);
  }

  async key(kid) {
    if (!this.imported.has(kid)) {
      const jwk = this.jwks.find((k) => k.kid === kid);
      if (!jwk) return null;
      const key = await crypto.subtle.importKey(
        "jwk",
        { kty: "OKP", crv: "Ed25519", x: jwk.x },
        { name: "Ed25519" },
        false,
        ["verify"],
      );
      this.imported.set(kid, key);
    }
    return this.imported.get(kid);
  }

  /** Throws a Rejected unless `jws` (`header..sig`) signs `body` (bytes). */
  async verify(jws, body) {
    if (!jws) throw new Rejected("unsigned");
    const parts = jws.split("..");
    if (parts.length !== 2) throw new Rejected("malformed");
    let header;
    try {
      header = JSON.parse(dec.decode(b64urlDecode(parts[0])));
    } catch {
      throw new Rejected("malformed");
    }
    if (header.alg !== "EdDSA" || typeof header.kid !== "string") throw new Rejected("malformed");
    const key = await this.key(header.kid);
    if (!key) throw new Rejected("unknown_key", header.kid);
    const input = enc.encode(`${parts[0]}.${b64urlEncode(body)}`);
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, b64urlDecode(parts[1]), input);
    if (!ok) throw new Rejected("bad_signature");
  }
}

/** Checks a verified body as this client's document, now. */
export function checkDocument(body, { service, clientId }, held, now = Date.now()) {
  let doc;
  try {
    doc = JSON.parse(dec.decode(body));
  } catch (e) {
    throw new Rejected("not_a_document", String(e));
  }
  if (doc.service !== service) throw new Rejected("wrong_service", doc.service);
  if ((doc.client_id ?? null) !== (clientId ?? null)) throw new Rejected("wrong_client", String(doc.client_id));
  if (!doc.issued_at || !doc.expires_at) throw new Rejected("no_validity");
  if (!(Date.parse(doc.expires_at) > now)) throw new Rejected("expired", doc.expires_at);
  if (held?.issued_at && Date.parse(doc.issued_at) < Date.parse(held.issued_at)) {
    throw new Rejected("older", doc.issued_at);
  }
  return doc;
}

/** The events a new document raises after `prev` (null at first). */
export function eventsFor(prev, doc) {
  const out = [["accepted", { revision: doc.revision, environment: doc.environment }]];
  if (prev && prev.api_base_url !== doc.api_base_url) {
    out.push(["baseurlchanged", { from: prev.api_base_url, to: doc.api_base_url }]);
  }
  if (prev && (prev.auth.realm !== doc.auth.realm || prev.auth.epoch !== doc.auth.epoch)) {
    out.push(["tokeninvalidated", { realm: doc.auth.realm, epoch: doc.auth.epoch }]);
  }
  if (doc.update.required && !prev?.update.required) {
    out.push(["updaterequired", { min_version: doc.update.min_version, url: doc.update.url, message: doc.update.message }]);
  }
  if (doc.update.recommended && !prev?.update.recommended) {
    out.push(["updaterecommended", { latest_version: doc.update.latest_version, url: doc.update.url }]);
  }
  if (doc.maintenance.active && !prev?.maintenance.active) {
    out.push(["maintenance", { until: doc.maintenance.until, message: doc.maintenance.message }]);
  }
  return out;
}

const memoryStorage = () => {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v)) };
};

/**
 * A running client. Events (`CustomEvent`, the data in `detail`):
 * accepted, baseurlchanged, tokeninvalidated, updaterequired,
 * updaterecommended, maintenance, rejected ({reason, kind}),
 * unreachable ({error}).
 */
export class VdhClient extends EventTarget {
  constructor(options) {
    super();
    const o = { longPollS: 30, backoffMs: [1000, 60000], storageKey: "vdh-edge-config", ...options };
    this.o = o;
    this.keys = o.keys instanceof Keys ? o.keys : new Keys(o.jwks);
    this.storage = o.storage ?? globalThis.localStorage ?? memoryStorage();
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.held = null;
    this.etag = null;
    this.lastRejection = null;
    this.running = false;
    this.resolved = new Map();
  }

  /** The document in use (the last good one). */
  get document() {
    return this.held;
  }

  query() {
    const q = new URLSearchParams({ sdk_version: this.o.sdkVersion });
    if (this.o.clientId) q.set("client_id", this.o.clientId);
    if (this.o.platform) q.set("platform", this.o.platform);
    if (this.o.appId) q.set("app_id", this.o.appId);
    return q;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEventImpl(type, { detail }));
  }

  async verified(body, signature, held) {
    await this.keys.verify(signature, body);
    return checkDocument(body, { service: this.o.service, clientId: this.o.clientId }, held);
  }

  /** Loads the stored (or bundled) answer, then refreshes until stop(). */
  async start() {
    const stored = this.storage.getItem(this.o.storageKey);
    const candidates = [];
    if (stored) {
      try {
        candidates.push(JSON.parse(stored));
      } catch {}
    }
    if (this.o.bundled) candidates.push(this.o.bundled);
    for (const c of candidates) {
      try {
        this.held = await this.verified(enc.encode(c.body), c.signature, null);
        this.etag = c.etag ?? null;
        this.loadedFrom = c === this.o.bundled ? "bundle" : "storage";
        for (const [t, d] of eventsFor(null, this.held)) this.emit(t, d);
        break;
      } catch (e) {
        this.emit("rejected", { reason: String(e.message), kind: e.kind });
      }
    }
    this.running = true;
    this.loop();
    return this;
  }

  stop() {
    this.running = false;
    this.abort?.abort();
  }

  async accept(resp) {
    const body = new Uint8Array(await resp.arrayBuffer());
    const signature = resp.headers.get("x-jws-signature");
    let doc;
    try {
      doc = await this.verified(body, signature, this.held);
    } catch (e) {
      if (!(e instanceof Rejected)) throw e;
      this.lastRejection = e;
      this.emit("rejected", { reason: e.message, kind: e.kind });
      return false;
    }
    const etag = resp.headers.get("etag");
    this.storage.setItem(this.o.storageKey, JSON.stringify({ body: dec.decode(body), signature, etag }));
    const prev = this.held;
    this.held = doc;
    this.etag = etag;
    if (JSON.stringify(prev) !== JSON.stringify(doc)) {
      for (const [t, d] of eventsFor(prev, doc)) this.emit(t, d);
    }
    return true;
  }

  async loop() {
    const [base, cap] = this.o.backoffMs;
    let step = base;
    // Polling: the first wait is a random part of the period, so clients
    // started together spread out.
    let first = true;
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    while (this.running) {
      const q = this.query();
      const wait = this.o.longPollS && this.etag ? this.o.longPollS : 0;
      if (wait) q.set("wait", String(wait));
      const headers = this.etag ? { "If-None-Match": this.etag } : {};
      this.abort = new AbortController();
      const timer = setTimeout(() => this.abort.abort(), (wait + 10) * 1000);
      let pause = 0;
      try {
        const resp = await this.fetch(`${this.o.edge}/v1/config/${this.o.service}?${q}`, {
          headers,
          signal: this.abort.signal,
        });
        if (resp.status === 200 || resp.status === 304) {
          const ok = resp.status === 304 || (await this.accept(resp));
          if (ok) {
            step = base;
            const period = (this.held?.refresh_after_s ?? 300) * 1000;
            pause = this.o.longPollS ? 0 : first ? Math.random() * period : period;
            first = false;
          } else {
            step = Math.min(step * 2, cap);
            pause = Math.random() * step;
          }
        } else {
          this.emit("unreachable", { error: `HTTP ${resp.status}` });
          step = Math.min(step * 2, cap);
          const retry = Number(resp.headers.get("retry-after") || 0) * 1000;
          pause = Math.max(Math.random() * step, retry);
        }
      } catch (e) {
        if (!this.running) break;
        this.emit("unreachable", { error: String(e) });
        step = Math.min(step * 2, cap);
        pause = Math.random() * step;
      } finally {
        clearTimeout(timer);
      }
      if (pause > 0) await sleep(pause);
    }
  }

  /** The addresses of `host` for this client, from /v1/resolve (cached for its TTL). */
  async resolve(host) {
    const hit = this.resolved.get(host);
    if (hit && hit.until > Date.now()) return hit.answer;
    const q = this.query();
    q.set("host", host);
    const resp = await this.fetch(`${this.o.edge}/v1/resolve?${q}`);
    if (resp.status !== 200) throw new Error(`resolve: HTTP ${resp.status}`);
    const body = new Uint8Array(await resp.arrayBuffer());
    await this.keys.verify(resp.headers.get("x-jws-signature"), body);
    const answer = JSON.parse(dec.decode(body));
    if ((answer.client_id ?? null) !== (this.o.clientId ?? null)) throw new Rejected("wrong_client");
    if (!(Date.parse(answer.expires_at) > Date.now())) throw new Rejected("expired", answer.expires_at);
    this.resolved.set(host, { answer, until: Date.now() + answer.ttl * 1000 });
    return answer;
  }
}
