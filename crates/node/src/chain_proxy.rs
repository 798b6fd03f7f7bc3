//! The chain's read-only query routes on a node that is not a chain validator (gateway,
//! worker): forwarded to the node's ledger endpoint, so that the explorer it serves, and
//! scripts, need only one origin. Writes (`POST /v1/tx`) are not forwarded.

use crate::http_error;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use deai_client::ChainClient;

/// The chain's read-only query routes, which a gateway forwards to its ledger node so that
/// the explorer it serves (and scripts) need only one origin.
pub const CHAIN_QUERY_ROUTES: [&str; 19] = [
    "status",
    "blocks",
    "block",
    "tx",
    "account",
    "workers",
    "worker",
    "validators",
    "jobs",
    "job",
    "proposals",
    "proposal",
    "params",
    "search",
    "proof",
    "evidence",
    "contributors",
    "allowance",
    "app",
];

/// A GET on a chain query route is forwarded to the ledger node (status, body and content
/// type relayed as they are); anything else is an OpenAI-shaped 404.
pub async fn forward(ledger: &ChainClient, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let first = path
        .strip_prefix("/v1/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    // Dot segments (plain or percent-encoded) and backslashes would let the URL parser climb
    // out of `/v1/<route>` to any path on the ledger's host.
    let lower = path.to_ascii_lowercase();
    let dotted = path.split('/').any(|seg| seg == "." || seg == "..")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\');
    if method != Method::GET || dotted || !CHAIN_QUERY_ROUTES.contains(&first) {
        return http_error(StatusCode::NOT_FOUND, "no such route; see docs/api.md").into_response();
    }
    let pq = uri.path_and_query().map_or(path, |p| p.as_str());
    let url = format!("{}{pq}", ledger.url().trim_end_matches('/'));
    let resp = match ledger.http().get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return http_error(
                StatusCode::BAD_GATEWAY,
                format!("the ledger node does not answer: {e}"),
            )
            .into_response()
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match resp.bytes().await {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => http_error(
            StatusCode::BAD_GATEWAY,
            format!("the ledger node's answer was cut: {e}"),
        )
        .into_response(),
    }
}

/// The explorer with the chain's query routes forwarded to `ledger`: the whole HTTP side of
/// a node whose roles have no API of their own (a validator).
pub fn explorer_router(ledger: ChainClient, ui: deai_explorer::UiConfig) -> axum::Router {
    deai_explorer::router(ui).fallback(move |method: Method, uri: Uri| {
        let ledger = ledger.clone();
        async move { forward(&ledger, method, uri).await }
    })
}
