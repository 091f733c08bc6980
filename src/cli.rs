//! Command-line interface (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vdh-edge", version, about = "Edge DNS and remote-config service for staged SDK backend cutovers")]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `vdh_edge=debug`.
    #[arg(long, global = true, env = "VDH_EDGE_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS and HTTP from the configured source.
    Serve(ServeArgs),
    /// Validate zones and state; print `path:line: message` per error.
    Check(SourceArgs),
    /// Show the config document and the DNS answer a described client gets,
    /// and which rule matched.
    Explain(ExplainArgs),
    /// Print the JSON Schema of the state document.
    Schema,
}

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
    #[arg(long, value_name = "DIR", default_value = "zones")]
    pub zones: PathBuf,
    /// Routing state (YAML).
    #[arg(long, value_name = "FILE", default_value = "deploy/state.yaml")]
    pub state: PathBuf,
    /// etcd endpoints, comma-separated (the state file is then not read).
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, value_name = "P", default_value = "/vdh-edge")]
    pub prefix: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// DNS listen address (UDP and TCP).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8053")]
    pub dns: SocketAddr,
    /// HTTP listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Folder for the last-known-good state and zone serials.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}
