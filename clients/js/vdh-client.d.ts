// Types of vdh-client.js (the reference web client of vdh-edge).

export interface Jwk { kty: "OKP"; crv: "Ed25519"; x: string; kid: string; use?: "sig"; alg?: "EdDSA" }
export interface Jwks { keys: Jwk[] }

export interface Document {
  schema_version: 1;
  service: string;
  revision: number;
  environment: string;
  backend_version: string;
  api_base_url: string;
  update: { required: boolean; recommended: boolean; min_version: string | null; latest_version: string | null; url: string | null; message: string | null };
  maintenance: { active: boolean; until: string | null; message: string | null };
  auth: { realm: string; epoch: number };
  refresh_after_s: number;
  rule: string;
  client_id?: string;
  issued_at?: string;
  expires_at?: string;
}

export interface Resolved {
  host: string;
  addresses: string[];
  ttl: number;
  environment: string | null;
  rule: string | null;
  revision: number;
  client_id?: string;
  issued_at?: string;
  expires_at?: string;
}

export type RejectedKind =
  | "unsigned" | "malformed" | "unknown_key" | "bad_signature" | "not_a_document"
  | "wrong_client" | "wrong_service" | "expired" | "no_validity" | "older";

export class Rejected extends Error { kind: RejectedKind }

export class Keys {
  constructor(jwks: Jwks | string);
  readonly kids: string[];
  verify(jws: string | null, body: Uint8Array): Promise<void>;
}

export interface StorageLike { getItem(key: string): string | null; setItem(key: string, value: string): void }

export interface Options {
  edge: string;
  service: string;
  sdkVersion: string;
  clientId?: string;
  platform?: "android" | "ios" | "web" | "other";
  appId?: string;
  jwks?: Jwks | string;
  keys?: Keys;
  storage?: StorageLike;
  storageKey?: string;
  bundled?: { body: string; signature: string; etag?: string };
  longPollS?: number;
  backoffMs?: [number, number];
  fetch?: typeof fetch;
}

export interface EventDetails {
  accepted: { revision: number; environment: string };
  baseurlchanged: { from: string; to: string };
  tokeninvalidated: { realm: string; epoch: number };
  updaterequired: { min_version: string | null; url: string | null; message: string | null };
  updaterecommended: { latest_version: string | null; url: string | null };
  maintenance: { until: string | null; message: string | null };
  rejected: { reason: string; kind: RejectedKind };
  unreachable: { error: string };
}

export class VdhClient extends EventTarget {
  constructor(options: Options);
  readonly document: Document | null;
  readonly lastRejection: Rejected | null;
  readonly loadedFrom?: "storage" | "bundle";
  start(): Promise<VdhClient>;
  stop(): void;
  resolve(host: string): Promise<Resolved>;
  addEventListener<K extends keyof EventDetails>(type: K, listener: (e: CustomEvent<EventDetails[K]>) => void): void;
}

export function b64urlEncode(bytes: Uint8Array): string;
export function b64urlDecode(text: string): Uint8Array;
export function checkDocument(body: Uint8Array, who: { service: string; clientId?: string }, held: Document | null, now?: number): Document;
export function eventsFor(prev: Document | null, doc: Document): [keyof EventDetails, unknown][];
