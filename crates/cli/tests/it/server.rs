//! A scripted HTTP server on 127.0.0.1 for the tests whose workflows call a network target:
//! it answers from a script and records every request it received.

use std::sync::{Arc, Mutex};

/// A scripted answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// A received request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The value of the header `name` (lower case), or "" when it was not sent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value)
    }
}

/// A tiny HTTP server that answers from a script and records requests.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// `answers` is consumed in order; the last one repeats.
    pub fn start(answers: Vec<Answer>) -> Server {
        use axum::extract::State;
        use axum::response::IntoResponse;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let state = (Arc::new(Mutex::new(answers)), Arc::clone(&requests));
        type Shared = (Arc<Mutex<Vec<Answer>>>, Arc<Mutex<Vec<Request>>>);
        async fn answer(
            State((answers, requests)): State<Shared>,
            request: axum::extract::Request,
        ) -> axum::response::Response {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let headers = request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into())
                })
                .collect();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            requests.lock().unwrap().push(Request { method, uri, headers, body });
            let (status, headers, body) = {
                let mut answers = answers.lock().unwrap();
                if answers.len() > 1 { answers.remove(0) } else { answers[0].clone() }
            };
            let mut response =
                (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let app = axum::Router::new().fallback(answer).with_state(state);
        #[allow(clippy::disallowed_methods)] // the test server's own task
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server { url, requests, _runtime: runtime }
    }

    /// The port it listens on, for workflows that take a `port` input.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port")
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
