//! wayline's workflow language: parse a file, validate it, and lower it into a [`Workflow`]
//! that cannot represent an invalid workflow.
//!
//! This crate is pure and synchronous: it knows nothing about async runtimes, databases,
//! HTTP or processes.

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod diagnostic;
pub mod expr;
pub mod fan_out;
pub mod format;
pub mod graph;
pub mod inputs;
pub mod lower;
pub mod model;
pub mod schema;
pub mod shell;
pub mod url;
pub mod yaml;

mod eval;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity, Span};
pub use lower::{Loaded, load, load_with};
pub use model::Workflow;
