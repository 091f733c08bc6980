//! Signed documents: every 200 of `/v1/config` and `/v1/resolve` carries a
//! detached JWS (RFC 7515 Appendix F: `BASE64URL(header)..BASE64URL(sig)`)
//! over the exact body bytes, `alg: EdDSA` (Ed25519, RFC 8037), `kid` the
//! key's JWK thumbprint (RFC 7638). `/v1/keys` publishes the public keys as
//! a JWKS.
//!
//! Why JWS and not HTTP Message Signatures (RFC 9421): an SDK verifies a
//! detached JWS with any JOSE library by putting the body back in the
//! middle (Android, iOS, the browser's WebCrypto need no HTTP-signature
//! code), and nothing about it depends on headers a proxy may rewrite.
//!
//! Keys come from PEM files (PKCS#8, one or more `PRIVATE KEY` blocks each);
//! every key is published, the first one signs. Rotation without a client
//! release: add the next key after the current one (clients learn it from
//! `/v1/keys` or pin it), later put it first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// The response header that carries the signature.
pub(crate) const SIGNATURE_HEADER: &str = "x-jws-signature";

/// Documents are re-issued (new `issued_at`, new signature) at most this
/// often, so every response within the period is the same bytes.
pub(crate) const ISSUE_PERIOD_S: u64 = 3600;

/// One signing key.
struct Key {
    kid: String,
    pair: Ed25519KeyPair,
}

/// The loaded keys: the first signs, all are published.
pub(crate) struct Signer {
    keys: Vec<Key>,
    /// `BASE64URL({"alg":"EdDSA","kid":...})` of the signing key.
    header: String,
    /// The JWKS body of `/v1/keys`.
    jwks: String,
    /// How long a document stays valid after it is issued.
    pub(crate) validity: Duration,
    /// Signatures by SHA-256 of the body (documents repeat within a period).
    memo: Mutex<HashMap<[u8; 32], std::sync::Arc<str>>>,
}

/// The RFC 7638 thumbprint of an Ed25519 public key.
pub(crate) fn kid_of(public: &[u8]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(public)
    );
    B64.encode(Sha256::digest(jwk.as_bytes()))
}

impl Signer {
    /// From PEM texts `(source, bytes)`, in order; every `PRIVATE KEY` block
    /// is one key. Errors name the source.
    pub(crate) fn from_pems(
        pems: &[(String, Vec<u8>)],
        validity: Duration,
    ) -> Result<Signer, String> {
        let mut keys = Vec::new();
        for (source, bytes) in pems {
            let mut n = 0;
            for der in PrivatePkcs8KeyDer::pem_slice_iter(bytes) {
                let der = der.map_err(|e| format!("{source}: not a PEM private key: {e}"))?;
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map_err(|e| format!("{source}: not an Ed25519 PKCS#8 key ({e}); make one with `vdh-edge keygen FILE`"))?;
                keys.push(Key {
                    kid: kid_of(pair.public_key().as_ref()),
                    pair,
                });
                n += 1;
            }
            if n == 0 {
                return Err(format!("{source}: no PRIVATE KEY block"));
            }
        }
        let first = keys.first().ok_or("no signing key")?;
        let header = B64.encode(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, first.kid));
        let jwks = serde_json::json!({
            "keys": keys.iter().map(|k| serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": B64.encode(k.pair.public_key().as_ref()),
                "kid": k.kid,
                "use": "sig",
                "alg": "EdDSA",
            })).collect::<Vec<_>>()
        })
        .to_string();
        Ok(Signer {
            keys,
            header,
            jwks,
            validity,
            memo: Mutex::new(HashMap::new()),
        })
    }

    /// The signing key's id.
    pub(crate) fn kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The JWKS (`/v1/keys`).
    pub(crate) fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The detached compact JWS of `body`.
    pub(crate) fn sign(&self, body: &[u8]) -> std::sync::Arc<str> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        if let Some(s) = self.memo.lock().expect("not poisoned").get(&digest) {
            return s.clone();
        }
        let input = format!("{}.{}", self.header, B64.encode(body));
        let sig = self.keys[0].pair.sign(input.as_bytes());
        let jws: std::sync::Arc<str> =
            format!("{}..{}", self.header, B64.encode(sig.as_ref())).into();
        let mut memo = self.memo.lock().expect("not poisoned");
        if memo.len() >= 65_536 {
            memo.clear();
        }
        memo.insert(digest, jws.clone());
        jws
    }

    /// `issued_at` and `expires_at` of a document issued now: the start
    /// of the current issue period, and that plus the validity.
    pub(crate) fn window(&self, now: SystemTime) -> (String, String) {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % ISSUE_PERIOD_S);
        (
            crate::util::rfc3339(issued),
            crate::util::rfc3339(issued + self.validity),
        )
    }
}

/// The DER of a PKCS#8 v1 Ed25519 key up to its 32-byte seed.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new Ed25519 key as PKCS#8 PEM, and its kid.
pub(crate) fn generate() -> Result<(String, String), String> {
    let rng = ring::rand::SystemRandom::new();
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
    // Written as PKCS#8 v1 (RFC 8410: the 32-byte seed, no public key),
    // the form OpenSSL and most tools read; ring's v2 carries the seed at
    // the same offset.
    let mut der = PKCS8_V1_ED25519_PREFIX.to_vec();
    der.extend_from_slice(v2.as_ref().get(16..48).ok_or("short PKCS#8")?);
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| e.to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok((pem, kid_of(pair.public_key().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifiably_and_publishes_every_key() {
        let (a, kid_a) = generate().unwrap();
        let (b, kid_b) = generate().unwrap();
        let s = Signer::from_pems(
            &[
                ("a.pem".into(), a.into_bytes()),
                ("b.pem".into(), b.into_bytes()),
            ],
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(s.kid(), kid_a);
        let jwks: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
        assert_eq!(jwks["keys"][1]["kid"], kid_b.as_str());
        let body = br#"{"x":1}"#;
        let jws = s.sign(body);
        let (h, sig) = jws.split_once("..").unwrap();
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], kid_a.as_str());
        let x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x);
        let input = format!("{h}.{}", B64.encode(body));
        key.verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        assert!(key.verify(b"other", &B64.decode(sig).unwrap()).is_err());
        assert_eq!(s.sign(body), jws, "memoized");
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Signer::from_pems(&[("k.pem".into(), b"nope".to_vec())], Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(e, "k.pem: no PRIVATE KEY block");
    }

    #[test]
    fn the_window_starts_at_the_period() {
        let (a, _) = generate().unwrap();
        let s = Signer::from_pems(
            &[("a".into(), a.into_bytes())],
            Duration::from_secs(7 * 86_400),
        )
        .unwrap();
        let t = crate::util::parse_rfc3339("2026-12-01T10:42:13Z").unwrap();
        assert_eq!(
            s.window(t),
            (
                "2026-12-01T10:00:00Z".to_string(),
                "2026-12-08T10:00:00Z".to_string()
            )
        );
    }
}
