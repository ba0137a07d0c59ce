//! Following an execution: its events from any sequence number, then live as they are
//! committed — from this process's engine (`live`) or by watching the store (`follow`,
//! for an execution another process runs).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use wayline_journal::{Event, EventKind};
use wayline_store::{Changes, LogLine, Store};

use crate::engine::{Error, Result};

/// What the engine publishes as it commits.
#[derive(Debug)]
pub enum Published {
    Events {
        execution: Arc<str>,
        events: Arc<[Event]>,
    },
    Log(LogLine),
    /// The engine no longer owns this execution (another one took it over): whatever
    /// happens next is only in the store.
    Lost {
        execution: Arc<str>,
    },
}

/// One thing a subscriber receives.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Event),
    Log(LogLine),
}

pub struct Subscription<S> {
    store: S,
    id: String,
    /// Last event delivered.
    after: u64,
    /// Last log line delivered (follow mode).
    log_after: Option<u64>,
    live: Option<broadcast::Receiver<Arc<Published>>>,
    /// Wakes a subscription that watches the store (follow mode, or after the engine stopped).
    changes: Option<Changes>,
    buffer: VecDeque<Item>,
    catching_up: bool,
    ended: bool,
}

const PAGE: usize = 1000;
/// How long a subscription trusts a silent bus (or a store that says nothing changed) before
/// looking at the store anyway.
const QUIET: Duration = Duration::from_secs(5);

impl<S: Store> Subscription<S> {
    /// Fed by an engine's bus; catches up from the store first and whenever it falls behind.
    pub fn live(
        store: S,
        id: &str,
        after: u64,
        bus: broadcast::Receiver<Arc<Published>>,
    ) -> Subscription<S> {
        Subscription {
            store,
            id: id.to_owned(),
            after,
            log_after: None,
            live: Some(bus),
            changes: None,
            buffer: VecDeque::new(),
            catching_up: true,
            ended: false,
        }
    }

    /// Watches the store: for executions run by another process.
    pub fn follow(store: S, id: &str, after: u64) -> Subscription<S> {
        Subscription {
            changes: Some(store.changes()),
            store,
            id: id.to_owned(),
            after,
            log_after: None,
            live: None,
            buffer: VecDeque::new(),
            catching_up: true,
            ended: false,
        }
    }

    /// Also deliver log lines after line number `after`.
    pub fn with_logs(mut self, after: u64) -> Subscription<S> {
        self.log_after = Some(after);
        self
    }

    /// Whether the store holds events after the last one delivered (read into the buffer).
    async fn reopened(&mut self) -> Result<bool> {
        let events = self.store.events(&self.id, self.after, PAGE).await.map_err(Error::Store)?;
        let found = !events.is_empty();
        for event in events {
            self.after = event.seq;
            self.buffer.push_back(Item::Event(event));
        }
        Ok(found)
    }

    /// The next event or log line; `None` after the execution's last event (a `finished`
    /// event that no rerun followed when it was read).
    pub async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                if let Item::Event(Event { kind: EventKind::Finished { .. }, .. }) = &item {
                    // The end, unless a rerun opened the execution again after it: its
                    // `redriven` event is already in the store.
                    let more = self.buffer.iter().any(|item| matches!(item, Item::Event(_)));
                    self.ended = !more && !self.reopened().await?;
                }
                return Ok(Some(item));
            }
            if self.ended {
                // The last event: read the log lines written before it, then stop.
                let Some(after) = self.log_after.take() else { return Ok(None) };
                let mut after = after;
                loop {
                    let lines =
                        self.store.logs(&self.id, None, after, PAGE).await.map_err(Error::Store)?;
                    let Some(last) = lines.last() else { break };
                    after = last.line;
                    self.buffer.extend(lines.into_iter().map(Item::Log));
                }
                continue;
            }
            if self.catching_up {
                let events =
                    self.store.events(&self.id, self.after, PAGE).await.map_err(Error::Store)?;
                let logs = match self.log_after {
                    Some(after) => {
                        self.store.logs(&self.id, None, after, PAGE).await.map_err(Error::Store)?
                    }
                    None => Vec::new(),
                };
                if let Some(last) = logs.last() {
                    self.log_after = Some(last.line);
                }
                let found = !events.is_empty() || !logs.is_empty();
                self.buffer.extend(logs.into_iter().map(Item::Log));
                for event in events {
                    self.after = event.seq;
                    self.buffer.push_back(Item::Event(event));
                }
                if found {
                    continue;
                }
                match &self.live {
                    Some(_) => self.catching_up = false,
                    None => {
                        // Nothing new: sleep until the store changes (the wait also sees a
                        // change made while the store was being read).
                        let store = &self.store;
                        let changes = self.changes.get_or_insert_with(|| store.changes());
                        changes.next(QUIET).await;
                        continue;
                    }
                }
            }
            let Some(live) = &mut self.live else { continue };
            // A quiet bus is checked against the store now and then: the engine may have lost
            // the execution to another owner, whose events only the store shows.
            let Ok(received) = tokio::time::timeout(QUIET, live.recv()).await else {
                self.catching_up = true;
                continue;
            };
            match received {
                Ok(published) if matches!(&*published, Published::Lost { execution } if **execution == *self.id) =>
                {
                    self.live = None;
                    self.catching_up = true;
                }
                Ok(published) => match &*published {
                    Published::Events { execution, events } if **execution == *self.id => {
                        for event in events.iter() {
                            if event.seq <= self.after {
                                continue;
                            }
                            if event.seq != self.after + 1 {
                                self.catching_up = true; // a gap: read it from the store
                                break;
                            }
                            self.after = event.seq;
                            self.buffer.push_back(Item::Event(event.clone()));
                        }
                    }
                    // Log lines are read from the store, in order and complete; the bus
                    // only says there are new ones (a slow reader that lags loses nothing).
                    Published::Log(line)
                        if line.execution == self.id && self.log_after.is_some() =>
                    {
                        self.catching_up = true;
                    }
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    // The engine stopped: whatever was committed is in the store.
                    self.live = None;
                    self.catching_up = true;
                }
            }
        }
    }
}
