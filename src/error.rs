//! [`Error`]: why the server could not start or stopped badly, with a kind to match on.

use std::fmt;

use crate::BoxError;

/// Why the server could not start, or stopped badly.
///
/// Its message is written for the person running the server; [`Error::kind`] tells a
/// program what went wrong, and [`std::error::Error::source`] the underlying error where
/// there is one.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The embedded interpreter or its loop thread could not start.
    Interpreter,
    /// The app could not be imported (or its factory failed).
    Import,
    /// The app's lifespan startup failed.
    LifespanStartup,
    /// The app's lifespan shutdown failed.
    LifespanShutdown,
    /// A socket could not be bound, or an inherited one used.
    Bind,
    /// The TLS certificate, key or CA files could not be used.
    Tls,
    /// An option's value is unusable (a pattern, a file to load, a combination).
    Config,
    /// The Python event loop stopped while serving.
    LoopDied,
    /// A migration tool could not do its work: the Python app's OpenAPI document or route
    /// table could not be read, or a strict check found Rust and Python definitions that
    /// differ.
    Migration,
    /// The process could not do what serving needs of the system: start a runtime, handle
    /// signals, start or supervise workers, watch files.
    System,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`; its text follows the message after a colon.
    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

/// Shows the message alone, so `fn main() -> Result<(), Error>` prints something readable.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_kept_and_shown_after_the_message() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let error = Error::with_source(ErrorKind::Bind, "cannot listen on 127.0.0.1:80", io);
        assert_eq!(error.kind(), ErrorKind::Bind);
        assert!(
            error
                .to_string()
                .starts_with("cannot listen on 127.0.0.1:80: ")
        );
        let source = std::error::Error::source(&error).unwrap();
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn an_error_without_source_is_its_message() {
        let error = Error::new(ErrorKind::LoopDied, "the loop stopped");
        assert_eq!(format!("{error:?}"), "the loop stopped");
        assert!(std::error::Error::source(&error).is_none());
    }
}
