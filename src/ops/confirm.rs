//! The confirmation prompt every write asks (or `--yes` answers).

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::WriteArgs;
use crate::error::UsageError;

/// Asks on the terminal, or requires `--yes` without one. Any answer but
/// yes is an error ("aborted, nothing written": exit 1), so a script that
/// pipes `n` learns that nothing happened.
pub(crate) fn confirm(write: &WriteArgs, question: &str) -> anyhow::Result<()> {
    if write.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError("not a terminal: add --yes to confirm the change".into()).into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("aborted, nothing written")
    }
}
