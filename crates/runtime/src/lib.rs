//! wayline's async driver: the [`Engine`] service and its cheap [`EngineHandle`], timers,
//! leases, the event bus and the local executor pool.
//!
//! The runtime is generic over [`wayline_store::Store`] and never names a backend. It follows
//! decide → commit → act: the pure core decides, the store commits, and only then are
//! effects carried out. It is the one place that reads wall time ([`clock`]) and the one place
//! that spawns tasks (through the engine's task tracker).

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod clock;
pub mod control;
pub mod engine;
pub mod executor;
pub mod id;
pub mod inspect;
pub mod owner;
pub mod render;
pub mod submit;
pub mod subscription;
pub mod workload;

pub use engine::{
    CommitObserver, Engine, EngineHandle, Error, LEASE_TTL, Options, REQUEST_SAFETY_NET, Recovered,
    Requests, Rerun,
};
pub use submit::{Breakpoints, Submission};
pub use subscription::{Item, Subscription};
pub use workload::Workload;
