//! How a command ends: the exit code contract (docs/design.md §3) and the one error type every
//! command returns, with conversions from the libraries' errors.

use std::fmt;

/// How a command ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked (the execution succeeded, the file is valid).
    Success = 0,
    /// The execution ended otherwise: failed, cancelled, rolled back.
    Ended = 1,
    /// Invalid definition, input or usage.
    Invalid = 2,
    /// Infrastructure error: database unreachable, disk full, ...
    Infrastructure = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Why a command failed: a message for people and the exit code it deserves.
#[derive(Debug)]
pub struct Error {
    pub exit: Exit,
    pub message: String,
    /// Standard output was closed by its reader (`| head -1`): nothing is left to say, and the
    /// command ends quietly with exit 0.
    pub closed: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid definition, input or usage: exit code 2.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error { exit: Exit::Invalid, message: message.into(), closed: false }
    }

    /// Something outside the user's input failed: exit code 3.
    pub fn infrastructure(message: impl Into<String>) -> Error {
        Error { exit: Exit::Infrastructure, message: message.into(), closed: false }
    }

    /// Standard output went away.
    pub fn closed() -> Error {
        Error { exit: Exit::Success, message: String::new(), closed: true }
    }

    /// Names the database in a database error that does not say which one.
    pub fn located(mut self, location: &wayline_backend::Location) -> Error {
        if let Some(rest) = self.message.strip_prefix("database: ") {
            self.message = format!("database {}: {rest}", location.describe());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<wayline_store::Error> for Error {
    fn from(error: wayline_store::Error) -> Error {
        use wayline_store::Error as E;
        match &error {
            // What the user named does not exist, or is someone else's right now.
            E::NotFound(_) | E::Ambiguous { .. } | E::Held { .. } | E::Config(_) => {
                Error::invalid(error.to_string())
            }
            _ => Error::infrastructure(format!("database: {error}")),
        }
    }
}

impl From<wayline_backend::Error> for Error {
    fn from(error: wayline_backend::Error) -> Error {
        match error {
            wayline_backend::Error::Invalid(message) => Error::invalid(message),
            wayline_backend::Error::Store { location, error } => {
                let mut converted = Error::from(error);
                if let Some(rest) = converted.message.strip_prefix("database: ") {
                    converted.message = format!("database {location}: {rest}");
                }
                converted
            }
        }
    }
}

impl From<wayline_runtime::Error> for Error {
    fn from(error: wayline_runtime::Error) -> Error {
        use wayline_runtime::Error as E;
        match error {
            E::Store(error) => Error::from(error),
            E::Rejected(rejected) => Error::invalid(rejected.to_string()),
            E::Invalid(message) | E::Conflict(message) => Error::invalid(message),
            E::Stopped => Error::infrastructure("the engine has stopped"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::infrastructure(crate::output::reason(&error))
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Error {
        Error::infrastructure(format!("cannot write JSON: {error}"))
    }
}
