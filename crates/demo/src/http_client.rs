//! A small HTTP/1.1 client for what nodes say to each other over HTTP: joins and
//! forwarded writes. Bounded: every call has a deadline and a body size cap.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read from a peer.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why a call got no answer. The request may or may not have been acted on.
#[derive(Debug)]
pub enum CallError {
    /// The address or request is malformed.
    Invalid(String),
    /// Connecting, sending or reading failed.
    Transport(String),
    /// No answer within the deadline.
    Timeout(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Invalid(why) => write!(f, "invalid request: {why}"),
            CallError::Transport(why) => write!(f, "{why}"),
            CallError::Timeout(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A shared, pooled HTTP client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// `:11000` and `0.0.0.0:11000` mean this machine.
pub fn host_port(address: &str) -> String {
    if let Some(port) = address.strip_prefix(':') {
        return format!("127.0.0.1:{port}");
    }
    if let Some(port) = address.strip_prefix("0.0.0.0:") {
        return format!("127.0.0.1:{port}");
    }
    address.to_string()
}

impl HttpClient {
    /// A client whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends `body` to `http://{address}{path}` and returns the status and body.
    pub async fn call(
        &self,
        method: Method,
        address: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let uri = format!("http://{}{path}", host_port(address));
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CallError::Invalid(format!("{uri}: {e}")))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| CallError::Transport(format!("{uri}: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("{uri}: reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }
}
