//! wayline's HTTP API (docs/design.md §7): the engine of `wayline run` kept alive and
//! reachable. This crate knows HTTP and nothing else: executions are started, read and
//! steered through the same runtime functions the command line calls, on whatever store the
//! binary opened (it never names a backend and holds no SQL).
//!
//! [`router`] answers the routes; [`keep_adopting`] takes over executions nobody runs (at
//! start: those of a server that crashed). The binary listens, and stops both on a signal.

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod metrics;
pub mod openapi;
mod problem;
mod routes;
pub mod tls;
pub mod tokens;
mod workflows;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wayline_core::execution::Secrets;
use wayline_runtime::clock::Clock;
use wayline_runtime::{EngineHandle, Recovered, owner};
use wayline_store::Store;

pub use problem::{FieldError, Problem};

/// What following an execution's journal yields, for the live streams (SSE, WebSocket).
#[derive(Debug)]
pub(crate) enum Followed {
    /// An event: its sequence number and CloudEvents form.
    Event(u64, serde_json::Value),
    /// The execution's final event was the last one.
    Ended,
    /// The store failed; the client resumes from its last sequence number.
    Failed(String),
}

/// An execution's events from a subscription, as CloudEvents, then `Ended` (or `Failed`),
/// then nothing.
pub(crate) fn follow<S: Store>(
    id: String,
    subscription: wayline_runtime::Subscription<S>,
    wanted: impl Fn(&wayline_journal::EventKind) -> bool + Send + Sync + 'static,
) -> futures_util::stream::BoxStream<'static, Followed> {
    use futures_util::StreamExt as _;
    let wanted = Arc::new(wanted);
    futures_util::stream::unfold(Some(subscription), move |state| {
        let id = id.clone();
        let wanted = Arc::clone(&wanted);
        async move {
            let mut subscription = state?;
            loop {
                return match subscription.next().await {
                    Ok(Some(wayline_runtime::Item::Event(event))) if !wanted(&event.kind) => {
                        continue;
                    }
                    Ok(Some(wayline_runtime::Item::Event(event))) => {
                        let json = wayline_journal::cloudevents::to_json(&id, &event);
                        Some((Followed::Event(event.seq, json), Some(subscription)))
                    }
                    Ok(Some(wayline_runtime::Item::Log(_))) => continue,
                    Ok(None) => Some((Followed::Ended, None)),
                    Err(error) => Some((Followed::Failed(error.to_string()), None)),
                };
            }
        }
    })
    .boxed()
}

/// Request bodies are at most this large (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

/// What the API serves from.
pub struct App<S> {
    /// The engine that runs this server's executions.
    pub handle: EngineHandle<S>,
    /// The secrets executions started here may read (`WAYLINE_SECRET_*` of the server).
    pub secrets: Arc<Secrets>,
    pub clock: Clock,
    /// Cancelled when the server stops: live streams end then, instead of holding the
    /// shutdown up until their executions finish.
    pub stopping: CancellationToken,
    pub metrics: Arc<metrics::Metrics>,
    /// Live streams open per token, against [`STREAMS_PER_TOKEN`].
    pub streams: Arc<Streams>,
}

/// How many live streams (SSE and WebSocket) one token may hold open at once.
pub const STREAMS_PER_TOKEN: usize = 64;

/// Live streams open, by token name.
#[derive(Debug, Default)]
pub struct Streams(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl Streams {
    /// Counts one more stream for `token`, while the guard lives; refused past the limit.
    pub fn open(self: &Arc<Self>, token: &str) -> Result<StreamSlot, Problem> {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(token.to_owned()).or_default();
        if *count >= STREAMS_PER_TOKEN {
            return Err(Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                format!(
                    "token `{token}` already has {STREAMS_PER_TOKEN} live streams open; close one first"
                ),
            ));
        }
        *count += 1;
        Ok(StreamSlot { streams: Arc::clone(self), token: token.to_owned() })
    }
}

/// One open stream of a token.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Streams>,
    token: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// The routes of the API, health checks included.
pub fn router<S: Store>(app: App<S>) -> axum::Router {
    routes::router(Arc::new(app))
}

/// Serves the API on `listener` (over TLS with `tls`) until `until` completes, then finishes
/// the requests under way (streams end with it).
pub async fn serve<S: Store>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: App<S>,
    until: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let service = router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = async move { until.cancelled().await };
    match tls {
        None => axum::serve(listener, service).with_graceful_shutdown(stop).await,
        Some(config) => {
            let listener = tls::Listener::new(listener, config).tap_io(|_| {});
            axum::serve(listener, service).with_graceful_shutdown(stop).await
        }
    }
}

/// How often the server looks for executions nobody runs.
pub const ADOPT_EVERY: Duration = Duration::from_secs(5);

/// Takes over, now and then every [`ADOPT_EVERY`] until `stop`, every unfinished execution
/// whose owner is gone (a crashed server's, a killed `wayline run`'s, one `run --detach`
/// recorded). Returns how many it took over at the first look, for the start-up message
/// (through `first`).
pub async fn keep_adopting<S: Store>(
    handle: EngineHandle<S>,
    secrets: Arc<Secrets>,
    clock: Clock,
    stop: CancellationToken,
    first: tokio::sync::oneshot::Sender<usize>,
) {
    let mut first = Some(first);
    loop {
        let adopted = adopt(&handle, &secrets, clock).await;
        if let Some(first) = first.take() {
            let _ = first.send(adopted);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ADOPT_EVERY) => {}
        }
    }
}

async fn adopt<S: Store>(handle: &EngineHandle<S>, secrets: &Arc<Secrets>, clock: Clock) -> usize {
    let ids = match owner::orphans(handle.store(), clock.now()).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "cannot look for executions to take over");
            return 0;
        }
    };
    let mut adopted = 0;
    for id in ids {
        match handle.recover(&id, Arc::clone(secrets), false).await {
            Ok(Recovered::Resumed) => {
                adopted += 1;
                tracing::info!(execution = %id, "took over");
            }
            Ok(Recovered::Finished(_)) => {}
            // Another server or process was quicker, or the definition cannot run here.
            Err(error) => tracing::warn!(execution = %id, %error, "not taken over"),
        }
    }
    adopted
}
