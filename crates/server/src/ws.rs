//! `GET /api/v1/ws`: many executions' events on one WebSocket.
//!
//! The client sends `{"subscribe": "<id>", "after": N}` and `{"unsubscribe": "<id>"}`; the
//! server answers each with `{"subscribed": "<full id>", "after": N}` (or `{"unsubscribed": …}`,
//! or `{"error": …}` naming what was wrong) and then sends each event of each subscribed
//! execution as a CloudEvents object, in order per execution, ending after its final event
//! with `{"ended": "<id>"}`. A reconnecting client subscribes again with the last sequence number
//! it saw (a CloudEvent's `id`) and misses nothing.
//!
//! A slow client never slows the engine: subscriptions read the journal from the store when
//! they fall behind the live bus. A client that does not take a message within
//! [`SEND_PATIENCE`] is dropped with close code 1008 and a reason.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wayline_runtime::Subscription;
use wayline_store::Store;

use crate::{App, Followed};

/// How long the server waits for a client to take one message.
pub const SEND_PATIENCE: Duration = Duration::from_secs(10);

/// Subscriptions one socket may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    subscribe: String,
    #[serde(default)]
    after: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    unsubscribe: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

/// What one subscription yields: a message for the client, and whether it was the last.
type Outgoing = (Value, bool);

fn follow<S: Store>(
    id: String,
    subscription: Subscription<S>,
    stop: CancellationToken,
) -> BoxStream<'static, Outgoing> {
    crate::follow(id.clone(), subscription, |_| true)
        .map(move |followed| match followed {
            Followed::Event(_, json) => (json, false),
            Followed::Ended => (json!({ "ended": id }), true),
            Followed::Failed(error) => (json!({ "error": error, "execution": id }), true),
        })
        .take_until(stop.cancelled_owned())
        .boxed()
}

/// Serves one socket until the client leaves, the server stops, or the client is too slow.
pub async fn serve<S: Store>(socket: WebSocket, app: Arc<App<S>>, _slot: crate::StreamSlot) {
    let _counted = app.metrics.stream();
    let (mut sink, mut incoming) = socket.split();
    let mut streams: SelectAll<BoxStream<'static, Outgoing>> = SelectAll::new();
    let mut subscribed: std::collections::HashMap<String, CancellationToken> = Default::default();
    loop {
        let outgoing: Value = tokio::select! {
            () = app.stopping.cancelled() => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "the server is stopping".into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            message = incoming.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(text))) => {
                    request(&app, &text, &mut streams, &mut subscribed).await
                }
                Some(Ok(Message::Binary(_))) => json!({ "error": "send JSON text messages" }),
                Some(Ok(_)) => continue, // pings are answered by the library
            },
            Some((message, last)) = streams.next(), if !streams.is_empty() => {
                if last && let Some(id) = message.get("ended").or_else(|| message.get("execution")).and_then(Value::as_str) {
                    subscribed.remove(id);
                }
                message
            }
        };
        let text = Message::Text(Utf8Bytes::from(outgoing.to_string()));
        match tokio::time::timeout(SEND_PATIENCE, sink.send(text)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let frame = CloseFrame {
                    code: close_code::POLICY,
                    reason: "too slow: resubscribe with the last event id you got".into(),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
                return;
            }
        }
    }
}

/// Handles one client message; returns the answer.
async fn request<S: Store>(
    app: &App<S>,
    text: &str,
    streams: &mut SelectAll<BoxStream<'static, Outgoing>>,
    subscribed: &mut std::collections::HashMap<String, CancellationToken>,
) -> Value {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(error) => {
            return json!({
                "error": format!("expected {{\"subscribe\": id, \"after\": n}} or {{\"unsubscribe\": id}}: {error}")
            });
        }
    };
    match request {
        Request::Subscribe(Subscribe { subscribe, after }) => {
            let id = match app.handle.store().resolve(&subscribe).await {
                Ok(id) => id,
                Err(error) => return json!({ "error": error.to_string(), "subscribe": subscribe }),
            };
            if subscribed.contains_key(&id) {
                return json!({ "error": "already subscribed", "subscribe": id });
            }
            if subscribed.len() >= MAX_SUBSCRIPTIONS {
                return json!({ "error": format!("at most {MAX_SUBSCRIPTIONS} subscriptions per socket"), "subscribe": id });
            }
            let stop = app.stopping.child_token();
            subscribed.insert(id.clone(), stop.clone());
            streams.push(follow(id.clone(), app.handle.subscribe(&id, after), stop));
            json!({ "subscribed": id, "after": after })
        }
        Request::Unsubscribe(Unsubscribe { unsubscribe }) => {
            let id = app.handle.store().resolve(&unsubscribe).await.unwrap_or(unsubscribe);
            match subscribed.remove(&id) {
                Some(stop) => {
                    stop.cancel();
                    json!({ "unsubscribed": id })
                }
                None => json!({ "error": "not subscribed", "unsubscribe": id }),
            }
        }
    }
}
