//! `wayline server`: the engine kept alive behind the HTTP API (`wayline-server`), on the
//! database of `--db`. It takes over executions nobody runs, serves until a stop signal, then
//! stops accepting, lets the engine cancel what still runs and release its leases, and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wayline_runtime::Engine;
use wayline_runtime::clock::Clock;

use super::Db;
use crate::error::{Error, Exit, Result};
use crate::{follow, secrets, signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. A non-loopback address needs --tls-cert and --tls-key (or
    /// --insecure-listen): without TLS, tokens and everything else cross the network in clear
    /// text.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: SocketAddr,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How many command and http attempts this server runs at once; the others wait for a
    /// slot, in order.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    local_slots: u32,
    /// On a stop signal, how long the attempts under way get to end before they are cancelled
    /// (a second signal cancels them at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    grace: Duration,
    /// How the server logs (stderr): `text` lines, or one `json` object per line.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Listen on a non-loopback address anyway (a trusted network, or a proxy in front that
    /// adds TLS and authentication).
    #[arg(long)]
    insecure_listen: bool,
    /// Worker threads (default: one per core). With 1, the engine and every request share one
    /// thread: no request waits for another thread to wake (the lowest submission latency),
    /// while many event streams share that thread with the engine.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    threads: Option<u32>,
    /// A file of secrets for the executions started here (`NAME=value` lines or a JSON
    /// object); `WAYLINE_SECRET_<NAME>` variables count too.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    #[command(flatten)]
    pub db: Db,
}

pub fn exec(args: Args) -> Result<Exit> {
    if args.log_format == "json" {
        crate::output::log_as_json();
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(wayline_server::tls::config(cert, key).map_err(Error::invalid)?)
        }
        _ => None,
    };
    if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure_listen {
        return Err(Error::invalid(format!(
            "refusing to listen on {} without TLS: wayline server listens on loopback; \
             pass --insecure-listen to serve a trusted network anyway",
            args.listen
        )));
    }
    let secrets = Arc::new(secrets::load(args.secrets_file.as_deref())?);
    let location = args.db.location()?;
    let named = location.clone();
    serve_on(args.threads, async move {
        let store = wayline_backend::open(&location).await?;
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|error| {
            Error::infrastructure(format!("cannot listen on {}: {error}", args.listen))
        })?;
        let address = listener.local_addr()?;
        if let Some(path) = super::token::bootstrap(&store).await? {
            tell(format!("made the first API token (admin); it is in {}", path.display()));
        }
        if !args.listen.ip().is_loopback() && tls.is_none() {
            tell(format!("warning: serving {address} without TLS (--insecure-listen)"));
        }
        let mut stop = signals::Stop::listen()?;
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(wayline_server::metrics::Metrics::new());
        let options = wayline_runtime::Options {
            local_slots: Some(args.local_slots as usize),
            observer: Some(Arc::clone(&metrics) as Arc<dyn wayline_runtime::CommitObserver>),
            ..follow::engine_options(&store)
        };
        let closed = store.closed();
        let clock = Clock::system();
        let (engine, handle) = Engine::new(store, options, shutdown.clone());
        let serving = CancellationToken::new();
        let counting = wayline_server::metrics::keep_counting(
            handle.clone(),
            Arc::clone(&metrics),
            serving.clone(),
        );
        let app = wayline_server::App {
            handle: handle.clone(),
            secrets: Arc::clone(&secrets),
            clock,
            stopping: serving.clone(),
            metrics: Arc::clone(&metrics),
            streams: Arc::default(),
        };
        let (adopted, first) = tokio::sync::oneshot::channel();
        let adopting =
            wayline_server::keep_adopting(handle.clone(), secrets, clock, serving.clone(), adopted);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let announce = async {
            let taken = first.await.unwrap_or(0);
            tell(format!(
                "server listening on {scheme}://{address} ({}){}",
                location.describe(),
                if taken > 0 { format!("; took over {taken} execution(s)") } else { String::new() }
            ));
        };
        let grace = args.grace;
        let drainer = handle.clone();
        let server = async {
            let served = wayline_server::serve(listener, tls, app, serving.clone()).await;
            // The API is closed: now the engine drains. Nothing new starts, the attempts under
            // way get `--grace` to end, and then whatever still runs is cancelled and the
            // leases are released, so that the executions continue wherever wayline runs next.
            if drainer.drain(grace).await.is_err() {
                shutdown.cancel();
            }
            served
        };
        let signal = async {
            tokio::select! {
                name = stop.next() => tell(format!(
                    "{name}: stopping the server; running attempts get {} to end (a second signal stops them now)",
                    wayline_journal::duration::format(grace)
                )),
                () = serving.cancelled() => {}
            }
            serving.cancel();
            tokio::select! {
                name = stop.next() => {
                    tell(format!("{name}: stopping now"));
                    shutdown.cancel();
                }
                () = shutdown.cancelled() => {}
            }
        };
        let engine = async {
            let result = engine.run().await;
            // An engine that stopped on its own (the store stayed unavailable, or it drained)
            // ends the server.
            serving.cancel();
            shutdown.cancel();
            result
        };
        let (engine_result, served, (), (), (), ()) =
            tokio::join!(engine, server, adopting, announce, signal, counting);
        drop(handle);
        let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
        served.map_err(|error| Error::infrastructure(format!("the server failed: {error}")))?;
        engine_result?;
        Ok(Exit::Success)
    })
    .map_err(|error| error.located(&named))
}

/// The server's runtime: by default a worker per core. Unlike a command's one thread
/// ([`super::block_on`]), requests are then answered while the engine is busy with a round
/// (a commit, a process start), and many clients spread over the cores. `--threads 1` is
/// that one thread: every hand-over between a request and the engine stays on it, which on a
/// machine slow to wake threads halves the submission latency (the api bench measures both).
fn serve_on<T>(
    threads: Option<u32>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Says something about the server on stderr: a `wayline: …` line, or a JSON log object with
/// `--log-format json` (through the same log as everything else).
fn tell(text: String) {
    tracing::info!(target: "wayline::server", "{text}");
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    wayline_journal::duration::parse(text)
        .map_err(|_| format!("`{text}` is not a duration like 30s"))
}
