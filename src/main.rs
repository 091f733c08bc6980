//! The `vdh-edge` binary: parse the command line, set up logging, run, and
//! turn an error into one message and an exit code (2 for usage errors, 1
//! otherwise).

use std::process::ExitCode;

use clap::Parser;
use vdh_edge::cli::Cli;
use vdh_edge::error::{Invalid, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls logs each odd client hello (an IP address as SNI, as wrk and
    // some SDKs send) at warn: one line per handshake a client controls.
    // Handshake failures are counted and logged at debug by the fronts;
    // `--log rustls=debug` brings rustls's own lines back.
    let filter = if cli.log.contains("rustls") {
        cli.log.clone()
    } else {
        format!("{},rustls=error", cli.log)
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if cli.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    let Err(e) = vdh_edge::run(cli.command) else {
        return ExitCode::SUCCESS;
    };
    if let Some(u) = e.downcast_ref::<UsageError>() {
        eprintln!("error: {u}");
        return ExitCode::from(2);
    }
    match e.downcast_ref::<Invalid>() {
        Some(Invalid(lines)) => {
            for l in lines {
                eprintln!("{l}");
            }
            eprintln!("error: configuration is invalid ({} error(s))", lines.len());
        }
        None => eprintln!("error: {e:#}"),
    }
    ExitCode::from(1)
}
