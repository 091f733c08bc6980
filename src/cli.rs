//! Command-line interface (clap derive).
//!
//! The doc comments of arguments are their `--help` text, written for a
//! terminal rather than for rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vdh-edge",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("VDH_EDGE_COMMIT"), ")"),
    about = "Edge DNS and remote-config service for staged SDK backend cutovers"
)]
/// The command line: global options and one command.
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `vdh_edge=debug`.
    #[arg(long, global = true, env = "VDH_EDGE_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as `text` or `json` (one JSON object per line: time,
    /// level, target, message and fields).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", env = "VDH_EDGE_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Serve DNS and HTTP from the configured source.
    Serve(ServeArgs),
    /// Validate zones and state; print `path:line: message` per error.
    Check(CheckArgs),
    /// Show the config document and the DNS answer a described client gets,
    /// and which rule matched.
    Explain(ExplainArgs),
    /// Print the JSON Schema of the state document.
    Schema,
    /// Write a desired state to etcd in one transaction.
    Apply(ApplyArgs),
    /// What is live: revision, edges, scheme, last rejection, rollback horizon.
    Status(StatusArgs),
    /// What changed when, and by whom.
    History(HistoryArgs),
    /// Re-apply the state as of an earlier revision, as a new revision.
    Rollback(RollbackArgs),
    /// Approve a proposed change (with `policy.approvals`); the last
    /// approval needed commits it.
    Approve(ProposalArgs),
    /// Reject (delete) a proposed change.
    Reject(ProposalArgs),
    /// The proposed changes waiting for approval.
    Proposals(ProposalsArgs),
    /// The four cutover schemes as phases: list, show, apply, abort.
    #[command(subcommand)]
    Scheme(SchemeCommand),
    /// Write a new Ed25519 signing key (PKCS#8 PEM) for --signing-key.
    Keygen(KeygenArgs),
    /// Writes scheduled with `--at` and ramps: list, cancel.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// The executor of schedules and ramps: pause, resume, status.
    #[command(subcommand)]
    Autopilot(AutopilotCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `vdh-edge completions bash > /etc/bash_completion.d/vdh-edge`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `vdh-edge manpage | man -l -`;
    /// with --dir, write vdh-edge.1 and one page per command there.
    #[command(hide = true)]
    Manpage(ManpageArgs),
}

/// `manpage [--dir DIR]`.
#[derive(Debug, Clone, Args)]
pub struct ManpageArgs {
    /// Write every page (`vdh-edge.1`, `vdh-edge-serve.1`, ...) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `keygen FILE`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Where to write the key (refused if it exists).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The `schedule` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Scheduled writes and ramps, with their state.
    List(ProposalsArgs),
    /// Cancel a scheduled write or a ramp (its remaining steps).
    Cancel(ProposalArgs),
}

/// The `autopilot` subcommands.
#[derive(Debug, Subcommand)]
pub enum AutopilotCommand {
    /// Stop executing schedules and ramps until `resume`.
    Pause(AutopilotArgs),
    /// Execute again; a ramp paused by a failing gate continues.
    Resume(AutopilotArgs),
    /// The executing edge, the pause, and every job with its next step.
    Status(ProposalsArgs),
}

/// `autopilot pause|resume`.
#[derive(Debug, Clone, Args)]
pub struct AutopilotArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Who pauses or resumes (default: the etcd user, else the OS user).
    #[arg(long, value_name = "NAME", env = "VDH_EDGE_ACTOR")]
    pub actor: Option<String>,
    /// Why (shown by `autopilot status`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// `scheme abort NAME`.
#[derive(Debug, Clone, Args)]
pub struct SchemeAbortArgs {
    /// The scheme in progress.
    pub name: String,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// The `scheme` subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum SchemeCommand {
    /// The schemes and their phases.
    List(SchemeListArgs),
    /// Each phase of a scheme: what it changes, what OLD and NEW SDKs see.
    Show(SchemeShowArgs),
    /// Apply one phase to the live state (etcd, or the --state file).
    Apply(SchemeApplyArgs),
    /// Return the state to what it was before the scheme's phase 1 (a
    /// rollback with the usual plan), and cancel its ramps.
    Abort(SchemeAbortArgs),
}

/// `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `scheme list`.
#[derive(Debug, Clone, Args)]
pub struct SchemeListArgs {
    /// Folder of scheme files (default: the built-in four).
    #[arg(long, value_name = "DIR")]
    pub schemes: Option<PathBuf>,
    /// The schemes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `scheme show NAME`.
#[derive(Debug, Clone, Args)]
pub struct SchemeShowArgs {
    pub name: String,
    #[arg(long, value_name = "DIR")]
    pub schemes: Option<PathBuf>,
    /// Override a parameter, e.g. --set new=prod-v2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The scheme as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `scheme apply NAME`.
#[derive(Debug, Clone, Args)]
pub struct SchemeApplyArgs {
    pub name: String,
    /// The phase to apply (1, 2, ...).
    #[arg(long, value_name = "N")]
    pub phase: Option<u32>,
    /// Share of old clients a staged phase forces (0-100, two decimals).
    #[arg(long, value_name = "P")]
    pub percent: Option<String>,
    /// Show the impact and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Preparatory step: lower the service's DNS TTL to this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub lower_ttl: Option<u32>,
    /// Make every SDK of this environment refresh its token.
    #[arg(long, value_name = "ENV")]
    pub bump_auth_epoch: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub schemes: Option<PathBuf>,
    /// Override a parameter, e.g. --set new=prod-v2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Ramp a staged phase through these percents (e.g. 10,25,50,100), one
    /// step per --every, executed by the edges' autopilot.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',')]
    pub ramp: Vec<String>,
    /// Time between ramp steps (e.g. 30m, 2h, 10s); a step also waits for
    /// the DNS drain of the previous one.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Must pass before each ramp step: `health:ENV` (its verdict is up) or
    /// `http:URL` (a GET answers 2xx within 2 s). Repeatable.
    #[arg(long, value_name = "GATE")]
    pub gate: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Options of commands that change etcd.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Write even if etcd changed since the state was read.
    #[arg(long)]
    pub force: bool,
    /// Who makes the change, for the audit trail (default: the etcd user,
    /// else the OS user).
    #[arg(long, value_name = "NAME", env = "VDH_EDGE_ACTOR")]
    pub actor: Option<String>,
    /// Why, for the audit trail (required when the state's
    /// `policy.reason_required` is true).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// A ticket or change-request id, for the audit trail.
    #[arg(long, value_name = "ID")]
    pub ticket: Option<String>,
    /// Print the plan and the outcome as one JSON object (the preview
    /// still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write now, without the approvals `policy.approvals` asks for; the
    /// change is recorded as break-glass.
    #[arg(long)]
    pub break_glass: bool,
    /// Do not write now: store the plan and let the edges' autopilot commit
    /// it at this RFC 3339 time (refused then if the keys it read moved).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// `approve ID`, `reject ID`.
#[derive(Debug, Clone, Args)]
pub struct ProposalArgs {
    /// The proposal's id (see `vdh-edge proposals`).
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Who approves or rejects (default: the etcd user, else the OS user).
    #[arg(long, value_name = "NAME", env = "VDH_EDGE_ACTOR")]
    pub actor: Option<String>,
    /// Why (recorded with a rejection).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// `proposals`.
#[derive(Debug, Clone, Args)]
pub struct ProposalsArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long)]
    pub json: bool,
}

/// `apply FILE`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The desired state (YAML).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Read the current state at this revision (default: the latest); the
    /// write is refused if any key read has changed since.
    #[arg(long, value_name = "R")]
    pub base_revision: Option<i64>,
    /// Also write the zone files of --zones to <prefix>/zones/.
    #[arg(long)]
    pub upload_zones: bool,
    /// Show what would change and exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long)]
    pub json: bool,
    /// CA certificate (PEM) to verify edges whose admin listener has TLS
    /// (`serve --admin-tls`); their certificate must name the address they
    /// register.
    #[arg(long, value_name = "FILE")]
    pub admin_ca: Option<PathBuf>,
    /// The edges' admin bearer token (`serve --admin-token-file`).
    #[arg(long, value_name = "FILE", env = "VDH_EDGE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `show REV`: the fields one change changed, key by key.
    #[arg(value_name = "show", value_parser = ["show"], requires = "revision")]
    pub show: Option<String>,
    /// The revision to show.
    #[arg(value_name = "REV")]
    pub revision: Option<i64>,
    #[arg(long)]
    pub json: bool,
    /// How many changes to show, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only changes by this actor.
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only changes that wrote or deleted this key (relative to the
    /// prefix, e.g. services/vdh-api).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Only changes at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only changes before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Keep running and print each new change as it is written (with
    /// --json: one JSON object per line, for a SIEM or a chat hook).
    #[arg(long)]
    pub follow: bool,
}

/// `rollback --to-revision R`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// The revision whose state to restore.
    #[arg(long, value_name = "R")]
    pub to_revision: i64,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `explain`: the client to explain and where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Service name, e.g. vdh-api.
    #[arg(long)]
    pub service: String,
    /// The SDK version the client runs (SemVer).
    #[arg(long, value_name = "V")]
    pub sdk_version: String,
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// android, ios, web or other.
    #[arg(long, value_name = "P")]
    pub platform: Option<String>,
    #[arg(long, value_name = "A")]
    pub app_id: Option<String>,
    /// The client's address: the HTTP peer for the document, and the
    /// resolver's address for the DNS answer.
    #[arg(long = "source", value_name = "IP", default_value = "127.0.0.1")]
    pub source_ip: std::net::IpAddr,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Folder of zone files; each `<origin>.zone` directly in it is one zone.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "zones",
        env = "VDH_EDGE_ZONES"
    )]
    pub zones: PathBuf,
    /// Routing state (YAML).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "deploy/state.yaml",
        env = "VDH_EDGE_STATE"
    )]
    pub state: PathBuf,
    /// etcd endpoints, comma-separated (the state file is then not read;
    /// empty: file mode).
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        env = "VDH_EDGE_ETCD"
    )]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(
        long,
        value_name = "P",
        default_value = "/vdh-edge",
        env = "VDH_EDGE_PREFIX"
    )]
    pub prefix: String,
    /// etcd user name (with --etcd-password).
    #[arg(long, value_name = "NAME", env = "VDH_EDGE_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// etcd password (prefer the environment variable).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "VDH_EDGE_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// File holding the etcd password (a trailing newline is ignored); read
    /// at each connection, so it can be rotated.
    #[arg(
        long,
        value_name = "FILE",
        env = "VDH_EDGE_ETCD_PASSWORD_FILE",
        conflicts_with = "etcd_password"
    )]
    pub etcd_password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed etcd's server certificates; turns on TLS.
    #[arg(long, value_name = "FILE", env = "VDH_EDGE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd TLS client authentication.
    #[arg(long, value_name = "FILE", env = "VDH_EDGE_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for --etcd-cert.
    #[arg(long, value_name = "FILE", env = "VDH_EDGE_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// Seconds an operator command waits for etcd: to find a live
    /// endpoint, and for each request.
    #[arg(long, value_name = "S", default_value_t = 5, env = "VDH_EDGE_TIMEOUT")]
    pub timeout: u64,
}

impl SourceArgs {
    /// The etcd settings, when `--etcd` was given.
    pub(crate) fn etcd_config(&self) -> Option<crate::etcd::EtcdConfig> {
        // `VDH_EDGE_ETCD=` (empty, as in the packaged environment file)
        // means file mode.
        if self.etcd.iter().all(|e| e.trim().is_empty()) {
            return None;
        }
        let endpoints = self
            .etcd
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        Some(crate::etcd::EtcdConfig {
            endpoints,
            prefix: self.prefix.trim_end_matches('/').to_string(),
            user: self.etcd_user.clone().map(|u| {
                let password = match &self.etcd_password_file {
                    Some(f) => crate::etcd::client::Password::File(f.clone()),
                    None => crate::etcd::client::Password::Value(
                        self.etcd_password.clone().unwrap_or_default(),
                    ),
                };
                (u, password)
            }),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
        })
    }

    /// The zones folder, when it exists (in etcd mode it is optional: zones
    /// may live in etcd).
    pub(crate) fn zones_dir(&self) -> Option<PathBuf> {
        self.zones.is_dir().then(|| self.zones.clone())
    }

    /// The file source these arguments name; both paths must exist.
    pub(crate) fn file_source(&self) -> anyhow::Result<crate::source::FileSource> {
        if !self.zones.is_dir() {
            anyhow::bail!(
                "{}: zones folder not found (use --zones DIR)",
                self.zones.display()
            );
        }
        if !self.state.is_file() {
            anyhow::bail!(
                "{}: state file not found (use --state FILE)",
                self.state.display()
            );
        }
        Ok(crate::source::FileSource {
            zones_dir: self.zones.clone(),
            state_file: Some(self.state.clone()),
        })
    }
}

/// `serve`: the source, the listeners and the serving options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// DNS listen address (UDP and TCP).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8053",
        env = "VDH_EDGE_DNS"
    )]
    pub dns: SocketAddr,
    /// Public HTTP listen address (the SDK's /v1/* and /healthz); HTTPS
    /// with --tls-cert and --tls-key.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "VDH_EDGE_HTTP"
    )]
    pub http: SocketAddr,
    /// Admin HTTP listen address: /metrics, /census, /readyz, /healthz.
    /// Keep it private (loopback or an internal network).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9080",
        env = "VDH_EDGE_ADMIN"
    )]
    pub admin: SocketAddr,
    /// Serve the admin listener over TLS too (same certificate).
    #[arg(long, requires = "tls_cert", env = "VDH_EDGE_ADMIN_TLS")]
    pub admin_tls: bool,
    /// Certificate chain (PEM) for HTTPS, DNS over TLS and DNS over HTTPS;
    /// reloaded when the file changes and on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "VDH_EDGE_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "VDH_EDGE_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
    /// DNS over TLS listen address (RFC 7858; 853 in production).
    #[arg(long, value_name = "ADDR", requires = "tls_cert", env = "VDH_EDGE_DOT")]
    pub dot: Option<SocketAddr>,
    /// DNS over HTTPS listen address (RFC 8484, /dns-query, HTTP/2).
    #[arg(long, value_name = "ADDR", requires = "tls_cert", env = "VDH_EDGE_DOH")]
    pub doh: Option<SocketAddr>,
    /// Folder for the last-known-good state and zone serials.
    #[arg(long, value_name = "DIR", env = "VDH_EDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Name this edge registers under in <prefix>-edges/ (default: host:http-port).
    #[arg(long, value_name = "ID", env = "VDH_EDGE_EDGE_ID")]
    pub edge_id: Option<String>,
    /// Threads (each with its own SO_REUSEPORT socket) answering DNS over
    /// UDP; default: the CPUs this process may run on.
    #[arg(long, value_name = "N")]
    pub udp_workers: Option<usize>,
    /// Threads the public HTTP (and DoH) connections run on, each a
    /// single-threaded event loop taking connections in turn; default: the
    /// CPUs this process may run on.
    #[arg(long, value_name = "N")]
    pub http_threads: Option<usize>,
    /// Sign documents with the Ed25519 keys in this PEM file (PKCS#8; a file
    /// may hold several keys). Every key is published at /v1/keys; the
    /// first key of the first file signs. Repeatable; reloaded on change.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Vec<PathBuf>,
    /// How long a signed document stays valid after it is issued (e.g. 7d,
    /// 12h).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub document_validity: String,
    /// Do not take part in the autopilot election (this edge never executes
    /// schedules or ramps).
    #[arg(long)]
    pub no_autopilot: bool,
    /// Seconds the autopilot leader's lease lives without this edge: the
    /// time another edge takes over after it dies.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub autopilot_lease: i64,
    /// Source address of environment health probes (on a host with several
    /// interfaces: probe from the one clients' traffic leaves by).
    #[arg(long, value_name = "IP")]
    pub health_source: Option<std::net::IpAddr>,
    /// Answer every UDP query through the full lookup (no reuse of answers
    /// that do not depend on the client); for comparisons.
    #[arg(long)]
    pub no_answer_cache: bool,
    /// Length of the census's short window, in seconds.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    pub census_hour: u64,
    /// Length of the census's long window, in seconds.
    #[arg(long, value_name = "S", default_value_t = 86_400)]
    pub census_day: u64,
    /// Length of one point of the census over time (the console's charts),
    /// in seconds; the last 48 points are kept, across restarts with
    /// --cache-dir.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    pub census_point: u64,
    /// Require this bearer token (the file's first line) on every request
    /// to the admin listener: the console, /metrics, /census, /readyz
    /// (`/healthz` stays open for liveness probes). Browsers sign in at
    /// /login.
    #[arg(long, value_name = "FILE", env = "VDH_EDGE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Most DNS-over-TCP connections served at once; more wait in the
    /// accept queue.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub tcp_max_connections: usize,
    /// Most DNS-over-TCP connections from one client address; more are
    /// closed at once (so one address cannot take every slot).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub tcp_per_address: usize,
    /// Seconds a DNS-over-TCP connection may wait for its next query.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub tcp_idle_timeout: u64,
    /// Milliseconds to read the rest of a query once it has started, and to
    /// write one answer: a client that does not read loses its slot.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub tcp_io_timeout: u64,
    /// Response rate limiting for DNS over UDP: responses per second per
    /// source network (/24, /56), response class and name; 0 (default) off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rrl_rate: u32,
    /// With --rrl-rate: every Nth limited response is sent truncated (TC=1,
    /// so real clients retry over TCP), the others dropped; 0 drops all.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rrl_slip: u32,
    /// With --rrl-rate: networks never limited (CIDR, comma-separated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub rrl_whitelist: Vec<ipnet::IpNet>,
    /// Most HTTP connections open at once (held long-polls included); more
    /// wait in the accept queue. 0: the open-file limit less what DNS over
    /// TCP and the rest of the process need.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub http_max_connections: usize,
    /// Most HTTP connections from one client address; more are closed at
    /// once. 0 (default): no share, since behind a load balancer every
    /// client has the balancer's address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub http_per_address: usize,
    /// Seconds to read a request's head or finish a TLS handshake; slower
    /// clients (slowloris) are closed, and so is an HTTP/1 connection that
    /// long without a request or a byte written (a long-poll being
    /// answered is not idle).
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub http_header_timeout: u64,
    /// Most long-polls held at once; more are answered 429 with
    /// Retry-After. 0: seven eighths of the HTTP connection limit, so
    /// plain requests always find a connection.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub long_polls_max: usize,
    /// Most long-polls held at once by one client address (after
    /// --trusted-proxy). 0 (default): no share, since mobile carriers put
    /// many clients behind one address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub long_polls_per_address: usize,
    /// Proxies (CIDR, comma-separated or repeated) trusted to name the
    /// client: by a PROXY protocol v1/v2 header on DNS-over-TCP and HTTP
    /// connections, or by X-Forwarded-For / Forwarded on HTTP requests;
    /// from any other peer these are ignored.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// Origins web SDKs may read /v1/* from (CORS), comma-separated or
    /// repeated, e.g. https://app.example.com; `*` for any. None: no CORS.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
}
