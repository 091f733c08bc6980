//! Connecting to etcd ([`EtcdConfig`]), its errors ([`EtcdError`]), and
//! retrying operator commands through elections.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::backoff::Backoff;

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub(crate) struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) user: Option<(String, Password)>,
    pub(crate) ca: Option<std::path::PathBuf>,
    pub(crate) cert: Option<std::path::PathBuf>,
    pub(crate) key: Option<std::path::PathBuf>,
    /// How long a command waits for etcd (`--timeout`).
    pub(crate) timeout: Duration,
}

/// Where the etcd password comes from.
#[derive(Clone)]
pub(crate) enum Password {
    /// Given on the command line or in the environment.
    Value(String),
    /// Read from this file at each connection.
    File(std::path::PathBuf),
}

impl std::fmt::Debug for Password {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Value(_) => f.write_str("Password(***)"),
            Password::File(p) => write!(f, "Password(file {})", p.display()),
        }
    }
}

impl Password {
    /// The password text.
    fn reveal(&self) -> Result<String, EtcdError> {
        match self {
            Password::Value(v) => Ok(v.clone()),
            Password::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|error| EtcdError::PasswordFile {
                    path: path.clone(),
                    error,
                }),
        }
    }
}

/// Errors talking to etcd or about what is in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EtcdError {
    /// etcd (or the connection to it) said no. Its text is printed once, in
    /// this message, so it is not also chained as a source.
    #[error("etcd: {0}")]
    Etcd(etcd_client::Error),
    /// A TLS file given with `--etcd-ca`, `--etcd-cert` or `--etcd-key` cannot be read.
    #[error("{}: {error}", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// `--etcd-password-file` cannot be read.
    #[error("{}: {error} (--etcd-password-file)", path.display())]
    PasswordFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// Only one of `--etcd-cert` and `--etcd-key` was given.
    #[error("--etcd-cert and --etcd-key go together")]
    CertWithoutKey,
    /// An endpoint did not answer within `--timeout`.
    #[error("no answer")]
    NoAnswer,
    /// A read answer without the response header etcd always sends.
    #[error("etcd answered without a header")]
    NoHeader,
    /// The revision asked for was compacted away.
    #[error("revision {wanted} is no longer in etcd (compacted); the oldest available is {oldest}")]
    Compacted { wanted: i64, oldest: i64 },
    /// The revision asked for has not been written yet.
    #[error("revision {wanted} is in the future (latest is {latest})")]
    FutureRevision { wanted: i64, latest: i64 },
    /// A compared key changed between the read and the write.
    #[error(
        "etcd changed since the state was read (a key was written or deleted concurrently); read again, or use --force"
    )]
    Conflict,
    /// The change needs more operations than one transaction may hold.
    #[error(
        "the change needs {0} operations in one transaction; etcd allows {max} (--max-txn-ops): split it into smaller changes",
        max = super::plan::MAX_TXN_OPS
    )]
    TooManyOps(usize),
    /// The change compares more keys than one transaction may hold.
    #[error(
        "the change compares {0} keys in one transaction; etcd allows {max} (--max-txn-ops): use fewer environments and services per prefix, or --force",
        max = super::plan::MAX_TXN_OPS
    )]
    TooManyCompares(usize),
    /// No endpoint answered; each with why, in one line.
    #[error("no etcd endpoint answered within {} s ({} tried: {})", timeout.as_secs(), tried.len(), tried.iter().map(|(e, why)| format!("{e} {why}")).collect::<Vec<_>>().join(", "))]
    Unreachable {
        tried: Vec<(String, String)>,
        timeout: Duration,
    },
    /// The request would be larger than etcd accepts.
    #[error(
        "the change is about {0} KiB; etcd accepts requests up to 1.5 MiB (--max-request-bytes): split it into smaller changes"
    )]
    TooLarge(usize),
}

impl EtcdConfig {
    /// `<prefix>/`: the range every read, watch, compare and delete uses.
    pub(crate) fn dir(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }

    /// Where edges register.
    pub(crate) fn edges_dir(&self) -> String {
        format!("{}-edges/", self.prefix.trim_end_matches('/'))
    }

    /// Full key of a key relative to the prefix.
    pub(crate) fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.dir())
    }

    /// Connects (lazily: etcd may be down; the first call then fails). The
    /// edge uses this: it must start with etcd down.
    pub(crate) async fn connect(&self) -> Result<Client, EtcdError> {
        Ok(Client::connect(&self.endpoints, Some(self.options()?)).await?)
    }

    /// Connects an operator command to the endpoints that answer: each is
    /// asked for one count of the prefix, all at once; the client then
    /// balances over the live ones, so one dead member of three costs
    /// nothing. While a member answers but has no leader (an election),
    /// the round is tried again until `--timeout`; when none answers, or
    /// time is up, one line names each endpoint and why. A refusal that is
    /// not about reaching etcd (a wrong password) is returned as it is.
    pub(crate) async fn connect_live(&self) -> Result<Client, EtcdError> {
        let opts = self.options()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Backoff::new();
        loop {
            let (live, tried, electing) = self.probe(&opts, deadline).await?;
            if !live.is_empty() {
                return Ok(Client::connect(&live, Some(opts)).await?);
            }
            let wait = backoff.delay();
            if !electing || tokio::time::Instant::now() + wait >= deadline {
                return Err(EtcdError::Unreachable {
                    tried,
                    timeout: self.timeout,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One probe round: the live endpoints, each other one with why, and
    /// whether any of those answered (so an election may be under way).
    async fn probe(
        &self,
        opts: &ConnectOptions,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<String>, Vec<(String, String)>, bool), EtcdError> {
        let mut probes = tokio::task::JoinSet::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let (ep, opts, key) = (ep.clone(), opts.clone(), self.dir());
            probes.spawn(async move {
                let probe = async {
                    let mut c = Client::connect([ep.as_str()], Some(opts)).await?;
                    c.get(key, Some(etcd_client::GetOptions::new().with_count_only()))
                        .await?;
                    Ok::<_, EtcdError>(())
                };
                let r = tokio::time::timeout_at(deadline, probe)
                    .await
                    .unwrap_or(Err(EtcdError::NoAnswer));
                (i, ep, r)
            });
        }
        let mut results = probes.join_all().await;
        results.sort_by_key(|r| r.0);
        let (mut live, mut tried, mut electing) = (Vec::new(), Vec::new(), false);
        for (_, ep, r) in results {
            match r {
                Ok(()) => live.push(ep),
                Err(e) if is_transient(&e) || matches!(e, EtcdError::NoAnswer) => {
                    let why = why_unreachable(&e);
                    // A status etcd sent (no transport error under it)
                    // came from a member that is up: "no leader", "leader
                    // changed".
                    electing |= matches!(
                        &e,
                        EtcdError::Etcd(etcd_client::Error::GRpcStatus(st))
                            if std::error::Error::source(st).is_none()
                    );
                    tried.push((short_endpoint(&ep), why));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((live, tried, electing))
    }

    /// The connection options every client uses.
    fn options(&self) -> Result<ConnectOptions, EtcdError> {
        let mut opts = ConnectOptions::new()
            // Below 5 s etcd drops the connection; 10 s works (FACTS).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(2)))
            .with_timeout(self.timeout)
            .with_require_leader(true);
        if let Some((u, p)) = &self.user {
            opts = opts.with_user(u.clone(), p.reveal()?);
        }
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                let pem = read_tls_file(ca)?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    let cert = read_tls_file(c)?;
                    let key = read_tls_file(k)?;
                    tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err(EtcdError::CertWithoutKey),
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }
}

/// `127.0.0.1:2379` for `http://127.0.0.1:2379`.
fn short_endpoint(ep: &str) -> String {
    ep.split_once("://")
        .map_or(ep, |(_, rest)| rest)
        .to_string()
}

/// A few words on why an endpoint did not answer: the I/O error's kind
/// when there is one (`connection refused`), else etcd's own words.
fn why_unreachable(e: &EtcdError) -> String {
    if matches!(e, EtcdError::NoAnswer) {
        return "(no answer)".into();
    }
    // Neither EtcdError::Etcd nor etcd_client's status error chains its
    // cause: start from tonic's status, whose source is the transport's.
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        EtcdError::Etcd(etcd_client::Error::GRpcStatus(status)) => {
            std::error::Error::source(status)
        }
        EtcdError::Etcd(inner) => Some(inner),
        other => Some(other),
    };
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return format!("({})", io.kind().to_string().to_lowercase());
        }
        source = s.source();
    }
    match e {
        EtcdError::Etcd(etcd_client::Error::GRpcStatus(s)) => format!("({})", s.message()),
        other => format!("({other})"),
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Etcd(e)
    }
}

fn read_tls_file(path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|error| EtcdError::TlsFile {
        path: path.to_path_buf(),
        error,
    })
}

/// True for errors that say "try again" (no leader, leader changed, member
/// unreachable, timeout) rather than "no". etcd sends every leader trouble
/// of the KV and transaction calls as `Unavailable` ("no leader", "leader
/// changed", "request timed out due to leader failure"); "not leader"
/// (`FailedPrecondition`) comes only from maintenance calls we do not make.
/// A request that outlived `--timeout` on our side is `Cancelled` ("Timeout
/// expired", from the client's own deadline): a slow election on a loaded
/// machine, tried again like the others. A transaction tried again after
/// it may have committed is safe: [`Retry`]'s callers look for their own
/// `meta/change` first.
pub(crate) fn is_transient(e: &EtcdError) -> bool {
    match e {
        EtcdError::Etcd(etcd_client::Error::GRpcStatus(s)) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        ),
        EtcdError::Etcd(etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)) => {
            true
        }
        _ => false,
    }
}

/// Retries of an operator command through an election: up to 15 s, with
/// the waits of [`Backoff`].
pub(crate) struct Retry {
    deadline: std::time::Instant,
    backoff: Backoff,
}

impl Retry {
    /// Starts the 15 s budget now.
    pub(crate) fn new() -> Retry {
        Retry {
            deadline: std::time::Instant::now() + Duration::from_secs(15),
            backoff: Backoff::new(),
        }
    }

    /// Waits before the next try; false when `e` is final or time is up.
    pub(crate) async fn again(&mut self, e: &EtcdError) -> bool {
        if !is_transient(e) || std::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.backoff.delay()).await;
        true
    }
}

/// True when etcd answered that a revision is outside what it holds
/// (compacted, or not yet written): gRPC `OutOfRange`.
pub(crate) fn is_out_of_range(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `main` prints errors with their causes (`{:#}`): a cause that the
    /// message already shows must not be chained again.
    #[test]
    fn errors_print_their_cause_once() {
        let e = read_tls_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.starts_with("/nonexistent/ca.pem: "), "{text}");
    }

    /// A request that ran out of `--timeout` during a slow election is
    /// tried again; a refusal is not.
    #[test]
    fn a_request_timeout_is_tried_again() {
        let status = |s| EtcdError::Etcd(etcd_client::Error::GRpcStatus(s));
        assert!(is_transient(&status(tonic::Status::cancelled(
            "Timeout expired"
        ))));
        assert!(is_transient(&status(tonic::Status::unavailable(
            "etcdserver: no leader"
        ))));
        assert!(!is_transient(&status(tonic::Status::permission_denied(
            "etcdserver: permission denied"
        ))));
        assert!(!is_transient(&status(tonic::Status::invalid_argument(
            "etcdserver: too many operations in txn request"
        ))));
    }
}
