//! wayline's pure core: ids, statuses, events, effects, the execution state machine and the
//! retry math.
//!
//! wayline-core knows nothing about tokio, SQL, HTTP or processes; it reads no clock and draws
//! no random numbers. Everything it decides is a function of its inputs.

pub mod execution;
pub mod plan;
pub mod render;
pub mod report;
pub mod retry;

pub use execution::{Effect, Execution, Input};
