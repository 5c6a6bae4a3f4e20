//! The JSON-lines history file: one [`Operation`] per line, as written by `serde_json`.
//!
//! The format is specified in the crate docs. Reading is strict about content (every line must
//! be a complete, valid operation) and lenient about layout (blank lines are skipped, so a
//! trailing newline or a hand-edited gap is fine). Every error names the 1-based line number.

use std::fmt;
use std::io::{BufRead, Write};

use crate::history::{InvalidOperation, Operation};

/// Writes `ops` as JSON lines: one operation per line, each line terminated by `\n`.
///
/// The writer is not flushed beyond what `write_all` does; wrap files in a `BufWriter` and
/// flush it yourself.
pub fn write_jsonl(mut writer: impl Write, ops: &[Operation]) -> std::io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut writer, op)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a JSON-lines history. Blank (whitespace-only) lines are skipped.
///
/// Fails on the first line that cannot be read, is not a valid JSON [`Operation`], or holds an
/// operation that fails [`Operation::validate`]; the error names that line.
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<Operation>, ReadError> {
    let mut ops = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let line = line.map_err(|source| ReadError::Io {
            line: line_number,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Operation = serde_json::from_str(&line).map_err(|source| ReadError::Malformed {
            line: line_number,
            source,
        })?;
        op.validate().map_err(|reason| ReadError::Invalid {
            line: line_number,
            reason,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Why a JSON-lines history could not be read. Every variant names the 1-based line number.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The underlying reader failed, or the line is not valid UTF-8.
    Io {
        /// The line being read.
        line: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The line is not a JSON object describing an [`Operation`] (bad JSON, a missing or
    /// mistyped field, an unknown `op` or `outcome`).
    Malformed {
        /// The offending line.
        line: usize,
        /// What `serde_json` objected to (its column refers to the line).
        source: serde_json::Error,
    },
    /// The line parses but describes an impossible operation.
    Invalid {
        /// The offending line.
        line: usize,
        /// What is wrong with the operation.
        reason: InvalidOperation,
    },
}

impl ReadError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            Self::Io { line, .. } | Self::Malformed { line, .. } | Self::Invalid { line, .. } => {
                *line
            }
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { line, source } => write!(f, "line {line}: cannot read: {source}"),
            Self::Malformed { line, source } => {
                write!(f, "line {line}: not a valid operation: {source}")
            }
            Self::Invalid { line, reason } => write!(f, "line {line}: {reason}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Malformed { source, .. } => Some(source),
            Self::Invalid { reason, .. } => Some(reason),
        }
    }
}
