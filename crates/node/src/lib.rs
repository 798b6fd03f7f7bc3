//! The network roles of a deai node: **worker** (runs a model for pay and signs receipts),
//! **validator** duties (re-checks sampled and challenged receipts, posts verdicts),
//! **gateway** (OpenAI-compatible HTTP API that escrows, routes and fails over), and
//! **devnet** (all of them plus a 4-validator chain in one process on loopback), and the
//! **training** coordinator and workers (DiLoCo rounds over HTTP, `deai-train` inside).
//!
//! Owns: the gateway/worker protocol, routing, the roles' HTTP APIs and their assembly.
//! Talks to the ledger only through a chain node's HTTP API (`deai-client`), as a role on
//! another host would; links `deai-chain` only to start the chain inside `devnet`.
//! Must never depend on the CLI.

pub mod beacon;
pub mod chain_proxy;
pub mod devnet;
#[cfg(feature = "faults")]
pub mod faults;
pub mod gateway;
pub mod node;
pub mod onchain;
pub mod proto;
#[cfg(test)]
mod testing;
pub mod train_net;
pub mod training;
pub mod verifier;
pub mod worker;
pub mod worker_client;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Block time as one process sees it: the first (time, height) it observed, against which
/// each later observation is measured.
#[derive(Default)]
pub struct BlockClock(std::sync::Mutex<Option<(std::time::Instant, u64)>>);

impl BlockClock {
    /// Records `height` now; returns the time and the number of blocks since the first
    /// observation (0 blocks until the height moved).
    pub fn observe(&self, height: u64) -> (Duration, u64) {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (t0, h0) = *first.get_or_insert((std::time::Instant::now(), height));
        (t0.elapsed(), height.saturating_sub(h0))
    }
}

/// Largest request body a role accepts (prompts are far smaller; receipts too).
pub const MAX_BODY: usize = 4 << 20;

/// Response middleware for every role's router: a 413 is answered before the body was read
/// to its end, so the server closes that connection afterwards. Saying so in a
/// `Connection: close` header keeps a keep-alive client from reusing the connection, where
/// its next request would fail with an incomplete message (seen in CI).
pub async fn close_if_body_unread(mut r: Response) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}

pub use deai_client::{http_client, is_loopback_url};

/// Serves `router` on `addr` in the background; returns the bound address.
pub async fn serve(
    addr: std::net::SocketAddr,
    router: axum::Router,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = l.local_addr()?;
    tokio::spawn(async move {
        // Handlers may ask who is calling (`ConnectInfo`): the training coordinator checks
        // that a worker's opening URL points back at the worker.
        let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!("HTTP server on {bound} stopped: {e}");
        }
    });
    Ok(bound)
}

/// A JSON error `{"error": {"message", "type", "code"}}` (OpenAI's shape) with a status.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    pub code: &'static str,
}

pub fn http_error(status: StatusCode, message: impl Into<String>) -> HttpError {
    let code = match status {
        StatusCode::UNAUTHORIZED => "invalid_api_key",
        StatusCode::PAYMENT_REQUIRED => "insufficient_quota",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "replayed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::BAD_REQUEST => "invalid_request",
        _ => "server_error",
    };
    HttpError {
        status,
        message: message.into(),
        code,
    }
}

impl HttpError {
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            402 | 429 => "insufficient_quota",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        (
            self.status,
            axum::Json(serde_json::json!({
                "error": { "message": self.message, "type": kind, "param": null, "code": self.code }
            })),
        )
            .into_response()
    }
}
