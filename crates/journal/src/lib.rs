//! The journal: what an execution is made of, in words every part of wayline shares — its
//! events, statuses, times, durations, the decisions people take, and how secrets are masked
//! before anything is written.
//!
//! This crate knows nothing about workflows' language (no YAML, no expressions), the state
//! machine, storage, processes or HTTP. The store, the executors and agents depend on it, so
//! that none of them needs the language or the engine to read or write a journal.

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cloudevents;
pub mod duration;
pub mod event;
mod mask;
pub mod status;
pub mod time;

pub use event::{
    Actor, AttemptId, AttemptKind, ErrorClass, ErrorInfo, Event, EventKind, FORMAT, Outcome,
    Process, StopReason, instance_name,
};
pub use mask::Masker;
pub use status::{Decision, Status, StepStatus};
pub use time::Time;
