//! Notifications from other processes: one connection that `LISTEN`s on the store's
//! channel and bumps the store's signal when a notification arrives.
//!
//! The connection is opened in the background by the first [`crate::PostgresStore::changed`]
//! call (a `wayline list` never needs it), so a caller's short timeout never cuts the setup
//! short, and reopened by a later call when it died. Notifications sent while it was down are
//! lost, so a reconnection counts as a change.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client};

use crate::Shared;

/// How long after a failed attempt to connect the next `changed()` tries again.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Listener {
    channel: String,
    /// Payload of this store's own notifications, which it does not need to hear.
    origin: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    connecting: bool,
    /// When connecting last failed: a server that is down is not asked on every call.
    failed: Option<Instant>,
}

impl Listener {
    pub(crate) fn new(channel: &str, origin: &str) -> Listener {
        Listener {
            channel: channel.into(),
            origin: origin.into(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts listening in the background unless a connection listens already (or is being set
/// up, or failed a moment ago).
pub(crate) fn ensure(shared: &Arc<Shared>) {
    {
        let mut state = shared.listener.state();
        let listening = state.client.as_ref().is_some_and(|client| !client.is_closed());
        let resting = state.failed.is_some_and(|failed| failed.elapsed() < RETRY);
        if listening || state.connecting || resting {
            return;
        }
        state.connecting = true;
        state.client = None;
    }
    let shared = Arc::clone(shared);
    // The listening connection's task: it sets the connection up, then drives it. It holds
    // the store only while setting up; afterwards the Client lives in the store, and the task
    // ends when the last store handle is dropped (dropping the Client) or the server closes
    // the connection. A storage driver's task: the accepted exception to "only the runtime
    // spawns".
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let signal = Arc::clone(&shared.signal);
        let Ok((client, mut connection)) = shared.pool.connect().await else {
            mark_failed(&shared);
            drop(shared);
            retry_later(&signal).await;
            return;
        };
        let origin = shared.listener.origin.clone();
        let notifications = Arc::clone(&signal);
        let drive = async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(notification) = message
                    && notification.payload() != origin
                {
                    bump(&notifications);
                }
            }
            // Lost: wake the waiters, whose next `changed()` listens again.
            bump(&notifications);
        };
        let setup = async move {
            let listen = format!("LISTEN \"{}\"", shared.listener.channel);
            if client.batch_execute(&listen).await.is_err() {
                mark_failed(&shared);
                return false;
            }
            let mut state = shared.listener.state();
            state.connecting = false;
            state.client = Some(client);
            state.failed = None;
            // Whatever changed before the LISTEN was in place (the first time too: a waiter
            // may have started waiting while this connection was still being set up) was not
            // notified; the waiters look once now rather than at their timeout.
            bump(&shared.signal);
            true
        };
        let ((), listening) = tokio::join!(drive, setup);
        if !listening {
            retry_later(&signal).await;
        }
    });
}

fn mark_failed(shared: &Shared) {
    let mut state = shared.listener.state();
    state.connecting = false;
    state.failed = Some(Instant::now());
}

/// After a failure, wakes the waiters once the pause is over, so that one of them tries
/// again (a waiter with a long timeout would otherwise not notice the server is back).
async fn retry_later(signal: &watch::Sender<u64>) {
    tokio::time::sleep(RETRY).await;
    bump(signal);
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|version| *version = version.wrapping_add(1));
}
