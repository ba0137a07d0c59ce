//! wayline's pure core: ids, statuses, events, effects, the execution state machine and the
//! retry math.
//!
//! wayline-core knows nothing about tokio, SQL, HTTP or processes; it reads no clock and draws
//! no random numbers. Everything it decides is a function of its inputs.

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod execution;
pub mod plan;
pub mod render;
pub mod report;
pub mod retry;

pub use execution::{Effect, Execution, Input};
