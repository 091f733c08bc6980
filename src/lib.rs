//! vdh-edge: an authoritative DNS server and remote-config service that moves
//! SDK clients between backends by publishing routing changes.
//!
//! `ARCHITECTURE.md` maps the modules; in dependency order:
//!
//! - `proto`: the DNS wire format (a leaf).
//! - `config`: the routing state, zones, and the compiler to a `Snapshot`.
//! - `document`, `census`, `metrics`: the config document, the client
//!   census, Prometheus metrics.
//! - `source`: the source contract and the file source; `etcd`: the etcd
//!   source, layout, transactions and registry.
//! - `front`: DNS and HTTP; `serve`: start-up, the reload loop, shared state.
//! - `scheme`, `explain`, `ops`: the cutover schemes and the commands.
//!
//! Only what the binary, the integration tests and the benchmarks use is
//! public: `cli`, `error`, and the re-exports below. Everything else is
//! private to the crate, so the compiler reports what nothing uses.

pub mod cli;
pub mod error;

pub(crate) mod backoff;
pub(crate) mod census;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod document;
pub(crate) mod etcd;
pub(crate) mod explain;
pub(crate) mod front;
#[cfg(test)]
mod fuzz;
pub(crate) mod metrics;
pub(crate) mod ops;
pub(crate) mod proto;
pub(crate) mod scheme;
pub(crate) mod serve;
pub(crate) mod shared;
pub(crate) mod signing;
pub(crate) mod source;
pub(crate) mod util;

// What the integration tests and the benchmarks drive directly.
pub use config::cohort::bucket;
pub use config::snapshot::{Inputs, SourceKind, compile};
pub use front::dns::{Transport, respond};
pub use front::http::MAX_WAIT_S;
pub use proto::name::Name;
pub use proto::types::{class_from_str, type_from_str};
pub use source::FileSource;
pub use util::{parse_rfc3339, raise_nofile_limit};

use cli::{AutopilotCommand, Command, ScheduleCommand, SchemeCommand};
use ops::block_on;

/// Writes generated text to standard output; a reader that closed early
/// (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Runs one command; what it prints goes to standard output.
pub fn run(command: Command) -> anyhow::Result<()> {
    let text = match command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            return rt.block_on(serve::serve(
                args,
                ops::autopilot::executor::spawn,
                console::routes,
            ));
        }
        Command::Check(args) => {
            println!("{}", ops::check::check(&args)?);
            return Ok(());
        }
        Command::Explain(args) => {
            print!("{}", ops::check::explain(&args)?);
            return Ok(());
        }
        Command::Schema => {
            println!("{}", config::state::json_schema());
            return Ok(());
        }
        Command::Completions(args) => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "vdh-edge", &mut out);
            return write_stdout(&out);
        }
        Command::Manpage(args) => {
            let cmd = <cli::Cli as clap::CommandFactory>::command();
            if let Some(dir) = args.dir {
                clap_mangen::generate_to(cmd, &dir)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                return Ok(());
            }
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            return write_stdout(&out);
        }
        Command::Keygen(args) => ops::check::keygen(&args)?,
        Command::Apply(args) => block_on(ops::apply::apply(&args))?,
        Command::Status(args) => block_on(ops::status::status(&args))?,
        Command::History(args) => block_on(ops::history::history(&args))?,
        Command::Rollback(args) => block_on(ops::rollback::rollback(&args))?,
        Command::Approve(args) => block_on(ops::approve::approve(&args))?,
        Command::Reject(args) => block_on(ops::approve::reject(&args))?,
        Command::Proposals(args) => block_on(ops::approve::list(&args))?,
        Command::Scheme(SchemeCommand::List(a)) => ops::scheme::scheme_list(&a)?,
        Command::Scheme(SchemeCommand::Show(a)) => ops::scheme::scheme_show(&a)?,
        Command::Scheme(SchemeCommand::Apply(a)) => block_on(ops::scheme::scheme_apply(&a))?,
        Command::Scheme(SchemeCommand::Abort(a)) => block_on(ops::scheme::scheme_abort(&a))?,
        Command::Schedule(ScheduleCommand::List(a)) => block_on(ops::autopilot::status(&a, false))?,
        Command::Schedule(ScheduleCommand::Cancel(a)) => block_on(ops::autopilot::cancel(&a))?,
        Command::Autopilot(AutopilotCommand::Pause(a)) => {
            block_on(ops::autopilot::pause(&a, true))?
        }
        Command::Autopilot(AutopilotCommand::Resume(a)) => {
            block_on(ops::autopilot::pause(&a, false))?
        }
        Command::Autopilot(AutopilotCommand::Status(a)) => {
            block_on(ops::autopilot::status(&a, true))?
        }
    };
    if !text.is_empty() {
        println!("{}", text.trim_end());
    }
    Ok(())
}

/// The dependency rules of ARCHITECTURE.md, checked on the source text:
/// which modules a module's code (comments aside) may name.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// Every `crate::<module>` named in code (not comments) under `dir`.
    fn uses(dir: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join(dir)];
        if !dir.ends_with(".rs") {
            files = walk(&root.join(dir));
        }
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + 7..];
                    let m: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.push((f.display().to_string(), m));
                }
            }
        }
        out
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        out
    }

    fn check(dir: &str, allowed: &[&str]) {
        let bad: Vec<_> = uses(dir)
            .into_iter()
            .filter(|(_, m)| !allowed.contains(&m.as_str()))
            .collect();
        assert!(bad.is_empty(), "{dir} may name only {allowed:?}: {bad:?}");
    }

    /// The order of ARCHITECTURE.md's code map: each module's code names
    /// only modules at or above its own place.
    #[test]
    fn modules_follow_the_dependency_order() {
        let order = [
            "proto", "util", "backoff", "config", "error", "document", "signing", "census",
            "metrics", "shared", "source", "etcd", "cli", "front", "serve", "scheme", "explain",
            "ops", "console",
        ];
        for (i, m) in order.iter().enumerate() {
            let path = if Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src")
                .join(m)
                .is_dir()
            {
                (*m).to_string()
            } else {
                format!("{m}.rs")
            };
            check(&path, &order[..=i]);
        }
    }

    #[test]
    fn proto_is_a_leaf() {
        check("proto", &["proto"]);
    }

    #[test]
    fn config_depends_only_on_proto() {
        check("config", &["proto", "config"]);
    }

    #[test]
    fn fronts_never_reach_sources_or_commands() {
        let forbidden = ["etcd", "source", "serve", "scheme", "ops", "cli"];
        let bad: Vec<_> = uses("front")
            .into_iter()
            .filter(|(_, m)| forbidden.contains(&m.as_str()))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn only_run_calls_the_commands() {
        for dir in [
            "config",
            "etcd",
            "front",
            "proto",
            "serve",
            "source",
            "census",
            "document.rs",
            "explain.rs",
            "metrics",
            "signing.rs",
            "scheme.rs",
            "shared.rs",
            "util.rs",
        ] {
            let bad: Vec<_> = uses(dir).into_iter().filter(|(_, m)| m == "ops").collect();
            assert!(bad.is_empty(), "{bad:?}");
        }
    }
}
