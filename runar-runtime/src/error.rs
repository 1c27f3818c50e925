//! Runar's one error type: a [`Code`] and a human-readable message.
//!
//! Every failure a caller can see, local or remote, is a [`Error`]. A handler's error crosses the
//! network unchanged: the caller receives the same code and the same message.

use std::fmt;

/// The category of a failure. Modelled on the gRPC status codes a Rust developer already knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The request was cancelled, typically by the caller.
    Cancelled,
    /// The caller supplied an invalid argument, path or message.
    InvalidArgument,
    /// The deadline expired before the operation completed.
    DeadlineExceeded,
    /// The requested entity (action, service, item) was not found.
    NotFound,
    /// The entity the caller tried to create already exists.
    AlreadyExists,
    /// The caller is not allowed to perform the operation.
    PermissionDenied,
    /// A limit was reached: message size, queue capacity, connections.
    ResourceExhausted,
    /// The operation is not implemented or not supported.
    Unimplemented,
    /// An invariant broke; a handler panicked.
    Internal,
    /// The service is currently unavailable; retrying may succeed.
    Unavailable,
}

impl Code {
    /// All codes, in wire order.
    pub const ALL: [Code; 10] = [
        Code::Cancelled,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
    ];

    /// The code's number on the wire (the gRPC status number).
    pub fn as_u32(self) -> u32 {
        match self {
            Code::Cancelled => 1,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
        }
    }

    /// The code for a wire number; unknown numbers become [`Code::Internal`].
    pub fn from_u32(n: u32) -> Code {
        Code::ALL
            .into_iter()
            .find(|c| c.as_u32() == n)
            .unwrap_or(Code::Internal)
    }

    /// The code's name, as in `NotFound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Cancelled => "Cancelled",
            Code::InvalidArgument => "InvalidArgument",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::PermissionDenied => "PermissionDenied",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::Unimplemented => "Unimplemented",
            Code::Internal => "Internal",
            Code::Unavailable => "Unavailable",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Runar error: a [`Code`] and a message.
///
/// ```
/// use runar_runtime::{Code, Error};
/// let err = Error::new(Code::NotFound, "no item 7");
/// assert_eq!(err.code(), Code::NotFound);
/// assert_eq!(err.message(), "no item 7");
/// assert_eq!(err.to_string(), "NotFound: no item 7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    code: Code,
    message: String,
}

/// `Result<T, runar::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The error's code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` put before its message; the code is kept.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            code: self.code,
            message: format!("{context}: {}", self.message),
        }
    }

    /// [`Code::Cancelled`] with a message.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(Code::Cancelled, message)
    }
    /// [`Code::InvalidArgument`] with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    /// [`Code::DeadlineExceeded`] with a message.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }
    /// [`Code::NotFound`] with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    /// [`Code::AlreadyExists`] with a message.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }
    /// [`Code::PermissionDenied`] with a message.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }
    /// [`Code::ResourceExhausted`] with a message.
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }
    /// [`Code::Unimplemented`] with a message.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }
    /// [`Code::Internal`] with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// [`Code::Unavailable`] with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip() {
        for code in Code::ALL {
            assert_eq!(Code::from_u32(code.as_u32()), code);
        }
        assert_eq!(Code::from_u32(999), Code::Internal);
    }
}
