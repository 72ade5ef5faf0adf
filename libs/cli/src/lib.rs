//! What every nn-tools binary shares, so the tools behave alike: errors printed one line per problem
//! with exit code 2 for bad input and 1 for runtime failures, the common flags ([`flags`]: `-j`, `-q`,
//! `--device`, `--force`), progress bars that appear on stderr only when it is a terminal, and the global
//! allocator ([`alloc`]).

pub mod alloc;
pub mod flags;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nntools_io::Result;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Runs a tool's body and turns its outcome into an exit code, printing errors to stderr as
/// `TOOL: error: LINE`, one line per problem.
pub fn run(tool: &str, body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for line in error.message.lines() {
                eprintln!("{tool}: error: {line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints a warning line to stderr (unless quiet).
pub fn warn(tool: &str, quiet: bool, line: &str) {
    if !quiet {
        eprintln!("{tool}: warning: {line}");
    }
}

/// Whether progress may be drawn: not quiet, and stderr is a terminal (logs and pipelines stay clean).
fn shows_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A progress bar over `len` items on stderr; hidden when quiet or when stderr is not a terminal.
pub fn progress(len: usize, what: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if !shows_progress(quiet) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Stacked progress bars on stderr (e.g. overall and current item), drawn under the same rule as
/// [`progress`]; add bars made by [`progress`] with `MultiProgress::add`.
pub fn progress_group(quiet: bool) -> MultiProgress {
    let target = if shows_progress(quiet) { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    MultiProgress::with_draw_target(target)
}
