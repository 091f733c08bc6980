//! The `vdh-edge` binary: parse the command line, set up logging, run, and
//! turn an error into one message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use vdh_edge::app::{self, AppError};
use vdh_edge::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = match cli.command {
        Command::Check(args) => app::check(&args).map(|summary| println!("{summary}")),
        Command::Explain(args) => app::explain(&args).map(|text| print!("{text}")),
        Command::Schema => {
            println!("{}", vdh_edge::state::json_schema());
            Ok(())
        }
        Command::Apply(args) => {
            app::block_on(vdh_edge::ops::apply(&args)).map(|t| print_nonempty(&t))
        }
        Command::Status(args) => {
            app::block_on(vdh_edge::ops::status(&args)).map(|t| print_nonempty(&t))
        }
        Command::History(args) => {
            app::block_on(vdh_edge::ops::history(&args)).map(|t| print_nonempty(&t))
        }
        Command::Rollback(args) => {
            app::block_on(vdh_edge::ops::rollback(&args)).map(|t| print_nonempty(&t))
        }
        Command::Scheme(cmd) => match cmd {
            vdh_edge::cli::SchemeCommand::List(a) => {
                vdh_edge::ops::scheme_list(&a).map(|t| print_nonempty(&t))
            }
            vdh_edge::cli::SchemeCommand::Show(a) => {
                vdh_edge::ops::scheme_show(&a).map(|t| print_nonempty(&t))
            }
            vdh_edge::cli::SchemeCommand::Apply(a) => {
                app::block_on(vdh_edge::ops::scheme_apply(&a)).map(|t| print_nonempty(&t))
            }
        },
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(app::serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<vdh_edge::ops::UsageError>() {
                eprintln!("error: {u}");
                return ExitCode::from(2);
            }
            match e.downcast_ref::<AppError>() {
                Some(AppError::Invalid(lines)) => {
                    for l in lines {
                        eprintln!("{l}");
                    }
                    eprintln!("error: configuration is invalid ({} error(s))", lines.len());
                }
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn print_nonempty(text: &str) {
    if !text.is_empty() {
        println!("{}", text.trim_end());
    }
}
