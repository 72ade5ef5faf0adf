//! The one error type shared by all nn-tools libraries.
//!
//! Every failure is classified as bad input (the user's files or flags are wrong: exit 2) or a runtime
//! failure (the machine failed us: exit 1), and its message names the file it concerns.

use std::fmt;
use std::path::Path;

/// Which side is at fault; decides the exit code of a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Missing, malformed or inconsistent input: exit code 2.
    BadInput,
    /// I/O or resource failure while working on valid input: exit code 1.
    Runtime,
    /// The work was stopped because its caller asked (a request's time limit): exit code 1.
    Cancelled,
}

/// A failure with a message that names the file concerned. The message may hold several lines, one
/// problem per line (an integrity check reports every problem it finds, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(path: impl AsRef<Path>, problem: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::BadInput, message: format!("{}: {problem}", path.as_ref().display()) }
    }

    pub fn runtime(path: impl AsRef<Path>, problem: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::Runtime, message: format!("{}: {problem}", path.as_ref().display()) }
    }

    /// Work on `what` stopped because its caller asked.
    pub fn cancelled(what: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::Cancelled, message: format!("{what}: cancelled") }
    }

    /// Classifies an I/O error on `path`: a missing or unreadable input is the user's problem, anything
    /// else (disk full, broken pipe, ...) is a runtime failure.
    pub fn io(path: impl AsRef<Path>, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match err.kind() {
            Io::NotFound | Io::InvalidData | Io::UnexpectedEof | Io::IsADirectory | Io::NotADirectory => {
                Self::bad_input(path, err)
            }
            _ => Self::runtime(path, err),
        }
    }

    /// Joins several bad-input problems into one error, one line each.
    pub fn bad_input_lines(lines: Vec<String>) -> Self {
        Self { kind: ErrorKind::BadInput, message: lines.join("\n") }
    }

    /// The process exit code that reports this error.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Runtime | ErrorKind::Cancelled => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
