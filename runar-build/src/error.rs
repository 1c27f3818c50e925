//! The error `runar-build` returns.

use std::fmt;

/// Why code generation failed.
///
/// Every variant about a `.proto` names the file and, where the source is known, the line, so
/// that `fn main() -> Result<(), Box<dyn std::error::Error>>` in `build.rs` prints a message that
/// points at the problem:
///
/// ```text
/// Error: shop.proto:14: service shop.Inventory, method New: the generated client method `new` would collide with the client's own `new`; rename the rpc
/// ```
///
/// `Debug` prints the same message as `Display`, for that reason.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be read, parsed or checked (syntax error, unknown type, missing
    /// import, …), as reported by protox.
    #[error("{}{message}", at(file.as_deref(), *line))]
    Proto {
        /// The file, as named relative to its include directory, when known.
        file: Option<String>,
        /// The 1-based line, when known.
        line: Option<u32>,
        /// What is wrong.
        message: String,
    },

    /// A construct `runar-build` cannot generate code for (an invalid service path, two rpcs
    /// whose generated names collide, an event rpc that streams, …).
    #[error("{}{construct}: {reason}", at(Some(file), *line))]
    Unsupported {
        /// The file defining the construct.
        file: String,
        /// The 1-based line, when known.
        line: Option<u32>,
        /// The construct (`service shop.Inventory, method New`).
        construct: String,
        /// Why it is not supported, and what to do instead.
        reason: String,
    },

    /// [`Builder::service_path`](crate::Builder::service_path) names a service that none of the
    /// compiled files defines.
    #[error(
        "runar-build: service_path(\"{service}\", ..) names no service of the compiled .proto files (services: {known})"
    )]
    UnknownService {
        /// The name given to the builder.
        service: String,
        /// The services that exist, comma-separated.
        known: String,
    },

    /// Neither [`Builder::out_dir`](crate::Builder::out_dir) nor the `OUT_DIR` environment
    /// variable (set by Cargo for build scripts) says where to write.
    #[error("runar-build: OUT_DIR is not set; run from build.rs or call configure().out_dir(..)")]
    NoOutDir,

    /// Writing the generated code failed.
    #[error("runar-build: cannot write the generated code: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The `.proto` file the error is about, when there is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Error::Proto { file, .. } => file.as_deref(),
            Error::Unsupported { file, .. } => Some(file),
            _ => None,
        }
    }

    /// The 1-based line the error is about, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            Error::Proto { line, .. } | Error::Unsupported { line, .. } => *line,
            _ => None,
        }
    }

    /// Converts a protox error, finding the line from its diagnostic labels.
    pub(crate) fn from_protox(err: protox::Error) -> Error {
        use miette::Diagnostic;

        let file = err.file().map(str::to_owned);
        let line = err.source_code().and_then(|source| {
            let label = err.labels()?.next()?;
            let contents = source.read_span(label.inner(), 0, 0).ok()?;
            u32::try_from(contents.line() + 1).ok()
        });
        let mut message = err.to_string();
        if let Some(help) = err.help() {
            message.push_str(&format!(" (help: {help})"));
        }
        Error::Proto {
            file,
            line,
            message,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `file:line: ` (or less) in front of a message.
fn at(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!("{file}:{line}: "),
        (Some(file), None) => format!("{file}: "),
        (None, _) => String::new(),
    }
}
