//! The client's real address behind trusted proxies (`--trusted-proxy`):
//! from a trusted peer, the rightmost address of `X-Forwarded-For` (or the
//! `for=` of `Forwarded`) that is not itself a trusted proxy; from any other
//! peer both headers are ignored. Rules, the census and `explain` then see
//! the client, not the balancer.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies(pub(crate) Vec<IpNet>);

impl Proxies {
    /// True if `ip` is one of the trusted proxies.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request that came from `peer`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("forwarded") {
            let Ok(text) = v.to_str() else { continue };
            for element in text.split(',') {
                for pair in element.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=')
                        && k.trim().eq_ignore_ascii_case("for")
                        && let Some(ip) = parse_hop(val.trim().trim_matches('"'))
                    {
                        hops.push(ip);
                    }
                }
            }
        }
        if hops.is_empty() {
            for v in headers.get_all("x-forwarded-for") {
                let Ok(text) = v.to_str() else { continue };
                hops.extend(text.split(',').filter_map(|h| parse_hop(h.trim())));
            }
        }
        // Rightmost hop that is not one of ours; all ours: the leftmost.
        hops.iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer)
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`,
/// `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let p = Proxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 10.9.9.9")]);
        assert_eq!(p.client(lb, &xff), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            p.client(other, &xff),
            other,
            "an untrusted peer's header is ignored"
        );
        // Rightmost untrusted: a client cannot pick its address by adding hops.
        let spoof = headers(&[("x-forwarded-for", "192.0.2.1, 203.0.113.9")]);
        assert_eq!(
            p.client(lb, &spoof),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::17]:4711\";proto=https")]);
        assert_eq!(
            p.client(lb, &fwd),
            "2001:db8::17".parse::<IpAddr>().unwrap()
        );
        let port = headers(&[("x-forwarded-for", "203.0.113.9:5555")]);
        assert_eq!(
            p.client(lb, &port),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p.client(lb, &HeaderMap::new()), lb);
        assert_eq!(
            Proxies::default().client(lb, &xff),
            lb,
            "nothing trusted by default"
        );
    }
}
