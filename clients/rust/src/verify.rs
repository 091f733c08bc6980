//! Verifying what an edge sends: the detached JWS of the body (RFC 7515
//! Appendix F, EdDSA) against pinned keys, then the document's binding to
//! this client, this service and the present time.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::Document;

/// Public keys the client trusts, by kid (from `/v1/keys` or bundled).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
}

/// Why an answer was refused (the client keeps its last good document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no signature")]
    Unsigned,
    #[error("malformed signature")]
    Malformed,
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    #[error("bad signature")]
    BadSignature,
    #[error("not a document: {0}")]
    NotADocument(String),
    #[error("issued for client {got:?}, this is {want:?}")]
    WrongClient {
        want: Option<String>,
        got: Option<String>,
    },
    #[error("for service {got}, not {want}")]
    WrongService { want: String, got: String },
    #[error("expired at {0}")]
    Expired(String),
    #[error("no validity window (issued_at/expires_at)")]
    NoValidity,
    #[error("older than the document held (issued {got}, held {held})")]
    Older { got: String, held: String },
}

impl Keys {
    /// From a JWKS body (`{"keys":[{"kty":"OKP","crv":"Ed25519","x":..,"kid":..}]}`).
    pub fn from_jwks(jwks: &str) -> Result<Keys, String> {
        let v: serde_json::Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        for k in v["keys"].as_array().ok_or("no keys")? {
            if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
                continue;
            }
            let x = B64
                .decode(k["x"].as_str().ok_or("no x")?)
                .map_err(|e| e.to_string())?;
            keys.push((k["kid"].as_str().ok_or("no kid")?.to_string(), x));
        }
        if keys.is_empty() {
            return Err("no Ed25519 key".into());
        }
        Ok(Keys { keys })
    }

    /// Adds the keys of `other` (pinning the current and the next key).
    pub fn merge(mut self, other: &Keys) -> Keys {
        for k in &other.keys {
            if !self.keys.iter().any(|(kid, _)| *kid == k.0) {
                self.keys.push(k.clone());
            }
        }
        self
    }

    /// The kids, in order.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Checks `jws` (`header..signature`) over `body`.
    pub fn verify(&self, jws: Option<&str>, body: &[u8]) -> Result<(), Rejected> {
        let jws = jws.ok_or(Rejected::Unsigned)?;
        let (h, sig) = jws.split_once("..").ok_or(Rejected::Malformed)?;
        let header: serde_json::Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Rejected::Malformed)?;
        if header["alg"] != "EdDSA" {
            return Err(Rejected::Malformed);
        }
        let kid = header["kid"].as_str().ok_or(Rejected::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .ok_or_else(|| Rejected::UnknownKey(kid.to_string()))?;
        let sig = B64.decode(sig).map_err(|_| Rejected::Malformed)?;
        let input = format!("{h}.{}", B64.encode(body));
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(input.as_bytes(), &sig)
            .map_err(|_| Rejected::BadSignature)
    }
}

/// Checks a verified body as this client's document, now.
pub(crate) fn check_document(
    body: &[u8],
    service: &str,
    client_id: Option<&str>,
    held: Option<&Document>,
    now: SystemTime,
) -> Result<Document, Rejected> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| Rejected::NotADocument(e.to_string()))?;
    if doc.service != service {
        return Err(Rejected::WrongService {
            want: service.to_string(),
            got: doc.service,
        });
    }
    if doc.client_id.as_deref() != client_id {
        return Err(Rejected::WrongClient {
            want: client_id.map(str::to_string),
            got: doc.client_id,
        });
    }
    let (Some(issued), Some(expires)) = (&doc.issued_at, &doc.expires_at) else {
        return Err(Rejected::NoValidity);
    };
    if parse_time(expires).is_none_or(|t| t <= now) {
        return Err(Rejected::Expired(expires.clone()));
    }
    if let Some(h) = held.and_then(|h| h.issued_at.as_ref())
        && parse_time(issued) < parse_time(h)
    {
        return Err(Rejected::Older {
            got: issued.clone(),
            held: h.clone(),
        });
    }
    Ok(doc)
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (what the edge writes).
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).ok()?))
}
