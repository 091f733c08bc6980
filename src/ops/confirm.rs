//! The confirmation prompt every write asks (or `--yes` answers).

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::WriteArgs;
use crate::error::UsageError;

/// Asks on the terminal, or requires `--yes` without one.
pub(crate) fn confirm(write: &WriteArgs, question: &str) -> anyhow::Result<bool> {
    if write.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError("not a terminal: add --yes to confirm the change".into()).into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
