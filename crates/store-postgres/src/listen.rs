//! Notifications from other processes: one connection that `LISTEN`s on the store's
//! channel and bumps the store's signal when a notification arrives.
//!
//! The connection is opened by the first [`crate::PostgresStore::changed`] call (a `wayline
//! list` never needs it) and reopened by a later one when it died. Notifications sent while
//! it was down are lost, so a reconnection counts as a change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio_postgres::{AsyncMessage, Client};

use crate::pool::Pool;

/// How long after a failed attempt to connect the next `changed()` tries again.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Listener {
    channel: String,
    /// Payload of this store's own notifications, which it does not need to hear.
    origin: String,
    signal: Arc<watch::Sender<u64>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    /// When connecting last failed: a server that is down is not asked on every call.
    failed: Option<Instant>,
    listened_before: bool,
}

impl Listener {
    pub(crate) fn new(channel: &str, origin: &str, signal: Arc<watch::Sender<u64>>) -> Listener {
        Listener {
            channel: channel.into(),
            origin: origin.into(),
            signal,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes sure a connection listens, when the server can be reached.
    pub(crate) async fn ensure(&self, pool: &Pool) {
        let mut state = self.state.lock().await;
        if state.client.as_ref().is_some_and(|client| !client.is_closed()) {
            return;
        }
        if state.failed.is_some_and(|failed| failed.elapsed() < RETRY) {
            return;
        }
        state.client = None;
        match self.listen(pool).await {
            Some(client) => {
                state.client = Some(client);
                state.failed = None;
                if state.listened_before {
                    bump(&self.signal);
                }
                state.listened_before = true;
            }
            None => state.failed = Some(Instant::now()),
        }
    }

    async fn listen(&self, pool: &Pool) -> Option<Client> {
        let (client, mut connection) = pool.connect().await.ok()?;
        let signal = Arc::clone(&self.signal);
        let origin = self.origin.clone();
        // The listening connection's driver: owned by its Client, which the store holds; it
        // ends when the last store handle is dropped or the server closes the connection.
        // A storage driver's task: the accepted exception to "only the runtime spawns".
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(notification) = message
                    && notification.payload() != origin
                {
                    bump(&signal);
                }
            }
        });
        client.batch_execute(&format!("LISTEN \"{}\"", self.channel)).await.ok()?;
        Some(client)
    }
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|version| *version = version.wrapping_add(1));
}
