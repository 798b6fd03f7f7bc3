//! The gateway: an OpenAI-compatible HTTP API in front of the network.
//!
//! For each request it authenticates the API key (one ledger account per key), tokenizes the
//! prompt, picks a worker from the ledger's registry (model, then recent failures, load and
//! price), signs an `OpenJob` escrowing the request's maximum cost, sends the job to the
//! worker and relays its tokens (as one JSON answer or as server-sent events). A worker that
//! refuses, fails or drops mid-stream is replaced by the next one with a fresh job; its
//! unused escrow comes back to the client when that job times out on chain. Because a job's
//! output is fixed by its seed on one kernel profile, a replacement's text continues where
//! the client's stream stopped; one that does not is refused too, and the stream ends with an
//! error rather than a splice. All text the client reads is derived from the token ids the
//! receipt signs, with the gateway's own tokenizer; a worker's text is never relayed.
//!
//! Every answer names its receipt (`x-deai-receipt` header, `deai` field), which
//! `GET /v1/receipts/{id}` serves with its verification status and ledger record.
//!
//! This module owns the [`Gateway`] type and its router; each concern has its own module:
//! `openai` (request shapes and validation), `routing` (choosing workers, failover),
//! `attempt` (one job on one worker, through [`crate::worker_client`]), `stream` (rendering
//! answers and server-sent events), `store` (receipt and conversation files) and `views`
//! (receipt and status views).

mod attempt;
mod config;
mod openai;
mod routing;
mod store;
mod stream;
#[cfg(test)]
mod tests;
mod views;
mod watch;

pub use config::{CatalogEntry, GatewayConfig, Payer};

use crate::{http_error, HttpError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use deai_client::ChainClient;
use deai_types::Hash256;
use openai::{json_body, model_json, ChatRequest, CompletionRequest, Prepared};
use routing::Routing;
use serde_json::{json, Value};
use std::sync::Arc;
use store::Store;

struct Inner {
    cfg: GatewayConfig,
    ledger: ChainClient,
    store: Store,
    routing: Arc<Routing>,
}

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

impl Gateway {
    pub fn new(cfg: GatewayConfig, ledger: ChainClient) -> anyhow::Result<Self> {
        let store = Store::open(&cfg.dir)?;
        let routing = Arc::new(Routing::new(&cfg, ledger.clone(), store.clone()));
        Ok(Gateway(Arc::new(Inner {
            cfg,
            ledger,
            store,
            routing,
        })))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/models", get(models))
            .route("/v1/models/{id}", get(model_info))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/receipts/{id}", get(receipt))
            .route("/v1/gateway/status", get(gateway_status))
            .merge(deai_explorer::router(deai_explorer::UiConfig::GATEWAY))
            .fallback(chain_proxy)
            .layer(axum::extract::DefaultBodyLimit::max(crate::MAX_BODY))
            .layer(axum::middleware::map_response(crate::close_if_body_unread))
            .with_state(self.clone())
    }

    /// The payer an API key names, and the app the request names (`X-Deai-App`, hex).
    fn auth(&self, headers: &HeaderMap) -> Result<Payer, HttpError> {
        let h = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                http_error(
                    StatusCode::UNAUTHORIZED,
                    "missing API key: send `Authorization: Bearer <key>`",
                )
            })?;
        let key = h.strip_prefix("Bearer ").unwrap_or(h).trim();
        let app = match headers.get("x-deai-app") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<Hash256>().ok())
                    .ok_or_else(|| {
                        http_error(
                            StatusCode::BAD_REQUEST,
                            "X-Deai-App must be an app id (64 hex characters)",
                        )
                    })?,
            ),
        };
        let cfg = &self.0.cfg;
        if let Some(signer) = find_key(&cfg.api_keys, key) {
            return Ok(Payer {
                signer,
                client: None,
                app,
            });
        }
        match (find_key(&cfg.client_keys, key), &cfg.signer) {
            (Some(client), Some(signer)) => Ok(Payer {
                signer: signer.clone(),
                client: Some(client),
                app,
            }),
            _ => Err(http_error(StatusCode::UNAUTHORIZED, "invalid API key")),
        }
    }

    fn model(&self, name: &str) -> Result<&CatalogEntry, HttpError> {
        self.0
            .cfg
            .models
            .iter()
            .find(|m| m.name == name || m.id.to_string() == name)
            .ok_or_else(|| {
                http_error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "the model `{name}` does not exist here; GET /v1/models lists the served ones"
                    ),
                )
                .with_code("model_not_found")
            })
    }

    /// Runs a checked request on the network and answers it.
    async fn respond(
        &self,
        client: Payer,
        model: CatalogEntry,
        prepared: Prepared,
    ) -> Result<Response, HttpError> {
        let Prepared {
            tokens,
            params,
            reply,
            prompt,
        } = prepared;
        // Completions count logprob text offsets from the start of the prompt.
        let prompt_chars = prompt["prompt"].as_str().map_or(0, |p| p.chars().count());
        let runs = self
            .0
            .routing
            .start(
                client,
                &model,
                tokens,
                params,
                reply.top_logprobs,
                reply.n,
                reply.stream,
                prompt,
            )
            .await?;
        stream::render(&model, runs, reply, prompt_chars).await
    }
}

// ---- handlers ----------------------------------------------------------------------------

async fn models(AxState(g): AxState<Gateway>) -> Result<Json<Value>, HttpError> {
    let mut data = Vec::new();
    for m in &g.0.cfg.models {
        data.push(model_json(m, g.0.routing.candidates(&m.id).await?.len()));
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn model_info(
    AxState(g): AxState<Gateway>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let m = g.model(&id)?;
    Ok(Json(model_json(
        m,
        g.0.routing.candidates(&m.id).await?.len(),
    )))
}

async fn receipt(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    // An API key is optional here; a wrong one is refused rather than silently ignored.
    let viewer = match headers.contains_key("authorization") {
        true => {
            g.auth(&headers)?;
            key_hash(&headers)
        }
        false => None,
    };
    let id = id
        .trim_start_matches("chatcmpl-")
        .trim_start_matches("cmpl-");
    let id: Hash256 = id
        .parse()
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, format!("bad receipt id: {e}")))?;
    let view = views::receipt_view(&g.0.ledger, &g.0.store, id, viewer).await?;
    Ok(Json(view))
}

/// The account of API key `key` among `keys`, found in time independent of where the keys
/// and `key` first differ: every configured key is compared, in constant time ([`ct_eq`]),
/// by their SHA-256 digests (so that not even a key's length shows), and no comparison stops
/// early.
fn find_key<T: Clone>(keys: &[(String, T)], key: &str) -> Option<T> {
    let digest = |k: &str| Hash256::digest_parts("deai-gateway-api-key-compare", &[k.as_bytes()]);
    let want = digest(key);
    let mut found = None;
    for (k, v) in keys {
        if ct_eq(&digest(k).0, &want.0) {
            found = Some(v.clone());
        }
    }
    found
}

/// Whether `a == b`, in time that depends only on their lengths, not on their contents (no
/// early exit at the first differing byte, which would let a caller guess a key byte by byte
/// from response times). Unequal lengths compare unequal, after the same work over the
/// shorter length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimizer from turning the fold back into an early exit.
    std::hint::black_box(diff) == 0
}

/// SHA-256 of the request's API key (what a stored prompt is keyed to, never the key).
fn key_hash(headers: &HeaderMap) -> Option<Hash256> {
    let h = headers.get("authorization")?.to_str().ok()?;
    let key = h.strip_prefix("Bearer ").unwrap_or(h).trim();
    Some(Hash256::digest_parts(
        "deai-gateway-api-key-v1",
        &[key.as_bytes()],
    ))
}

async fn gateway_status(AxState(g): AxState<Gateway>) -> Json<Value> {
    Json(views::worker_stats(&g.0.ledger, &g.0.cfg.models, &g.0.routing).await)
}

/// Fallback: the chain's query routes, forwarded to the ledger node; else a 404.
async fn chain_proxy(
    AxState(g): AxState<Gateway>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    crate::chain_proxy::forward(&g.0.ledger, method, uri).await
}

async fn chat_completions(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let client = g.auth(&headers)?;
    let req = json_body(body)?;
    let model = g.model(&req.model)?.clone();
    let prepared = req.prepare(&model, key_hash(&headers))?;
    g.respond(client, model, prepared).await
}

async fn completions(
    AxState(g): AxState<Gateway>,
    headers: HeaderMap,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let client = g.auth(&headers)?;
    let req = json_body(body)?;
    let model = g.model(&req.model)?.clone();
    let prepared = req.prepare(&model, key_hash(&headers))?;
    g.respond(client, model, prepared).await
}

#[cfg(test)]
mod key_tests {
    use super::{ct_eq, find_key};

    #[test]
    fn api_keys_compare_in_constant_time_and_exactly() {
        assert!(ct_eq(b"sk-abc", b"sk-abc"));
        assert!(ct_eq(b"", b""));
        // A difference anywhere, first or last byte, and a prefix of either length.
        assert!(!ct_eq(b"sk-abc", b"xk-abc"));
        assert!(!ct_eq(b"sk-abc", b"sk-abd"));
        assert!(!ct_eq(b"sk-abc", b"sk-ab"));
        assert!(!ct_eq(b"sk-ab", b"sk-abc"));
        assert!(!ct_eq(b"", b"a"));
        // Lengths that differ by a multiple of 256 still differ.
        assert!(!ct_eq(&[0u8; 256], &[]));
        let keys = vec![("sk-one".to_string(), 1), ("sk-two".to_string(), 2)];
        assert_eq!(find_key(&keys, "sk-one"), Some(1));
        assert_eq!(find_key(&keys, "sk-two"), Some(2));
        for wrong in ["sk-on", "sk-one ", "sk-onf", "", "SK-ONE", "sk-twosk-one"] {
            assert_eq!(find_key(&keys, wrong), None, "{wrong:?}");
        }
    }
}
