//! The CLI's one error type: a [`runar::Code`], a message, and a hint for the user.

use runar::Code;

/// What went wrong: printed as `CodeName: message` (and `hint: …`) on stderr, and turned into
/// the process's exit code.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl CliError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `10 +` the code's gRPC number: 11 Cancelled, 13 InvalidArgument, 14 DeadlineExceeded,
    /// 15 NotFound, 16 AlreadyExists, 17 PermissionDenied (a wrong key), 18 ResourceExhausted,
    /// 22 Unimplemented, 23 Internal, 24 Unavailable. (clap's usage errors exit with 2.)
    pub(crate) fn exit_code(&self) -> u8 {
        u8::try_from(self.code.as_u32()).map_or(1, |n| n.saturating_add(10))
    }
}

impl From<runar::Error> for CliError {
    fn from(e: runar::Error) -> Self {
        CliError::new(e.code(), e.message())
    }
}
