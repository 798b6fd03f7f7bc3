//! The gateway's read-only views: `GET /v1/receipts/{id}` (a stored receipt with its ledger
//! record, verification status and, for its owner, the conversation) and
//! `GET /v1/gateway/status` (the workers as this gateway sees them).

use super::config::CatalogEntry;
use super::routing::Routing;
use super::store::Store;
use crate::worker_client::WorkerClient;
use crate::{http_error, HttpError};
use axum::http::StatusCode;
use deai_client::{ChainClient, WorkerEntry};
use deai_types::Hash256;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest a worker may take to answer the status probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Per registered worker: requests in flight, failures and jobs sent as this gateway sees
/// them, and the compute time the worker reports (`/worker/v1/health`, asked with a short
/// timeout; `null` when it does not answer), for revenue per compute-hour.
pub(super) async fn worker_stats(
    ledger: &ChainClient,
    models: &[CatalogEntry],
    routing: &Routing,
) -> Value {
    // Active workers serving a model of this gateway, at most 64, each asked once with a
    // short timeout (anyone can register an endpoint: keep this probe small).
    let registered: Vec<WorkerEntry> = ledger
        .workers()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.worker.active && models.iter().any(|m| w.worker.models.contains(&m.id)))
        .take(64)
        .collect();
    let health = futures::future::join_all(registered.iter().map(|w| async move {
        WorkerClient::new(&w.worker.endpoint, PROBE_TIMEOUT, PROBE_TIMEOUT)
            .health()
            .await
    }))
    .await;
    let seen = routing.tally();
    let list: Vec<Value> = registered
        .iter()
        .zip(health)
        .map(|(w, h)| {
            let a = &w.address;
            json!({
                "address": hex::encode(a),
                "in_flight": seen.load.get(a).copied().unwrap_or(0),
                "failures": seen.failures.get(a).copied().unwrap_or(0),
                "assigned": seen.assigned.get(a).copied().unwrap_or(0),
                "reachable": h.is_some(),
                "compute_ms": h.as_ref().and_then(|h| h["compute_ms"].as_u64()),
                "busy": h.as_ref().and_then(|h| h["busy"].as_u64()),
                "mean_job_ms": h.as_ref().and_then(|h| h["mean_job_ms"].as_u64()),
                "refused_busy": h.as_ref().and_then(|h| h["refused_busy"].as_u64()),
            })
        })
        .collect();
    json!({
        "models": models.iter().map(|m| &m.name).collect::<Vec<_>>(),
        "workers": list,
    })
}

/// The receipt of request or job `id`, with its ledger record and verification status, and
/// the conversation when `viewer` (the SHA-256 of an API key) sent it.
pub(super) async fn receipt_view(
    ledger: &ChainClient,
    store: &Store,
    id: Hash256,
    viewer: Option<Hash256>,
) -> Result<Value, HttpError> {
    let (job, request) = store.resolve(&id).await;
    let conversation = match request {
        Some(r) => store.conversation(&r, viewer).await,
        None => None,
    };
    let receipt = store.receipt(&job).await;
    let on_chain = ledger.job(&job).await.map_err(|e| {
        http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ledger unavailable: {e:#}"),
        )
    })?;
    if receipt.is_none() && on_chain.is_none() {
        return Err(http_error(
            StatusCode::NOT_FOUND,
            format!("no receipt or job {id}"),
        ));
    }
    let digest_matches = match (&receipt, &on_chain) {
        (Some(r), Some(j)) => j.receipt.as_ref().map(|rec| {
            deai_proof::Receipt::from_json(&r.to_string())
                .ok()
                .and_then(|r| r.to_bytes().ok())
                .is_some_and(|b| deai_proof::receipt_digest(&b) == rec.digest)
        }),
        _ => None,
    };
    let verification = match on_chain.as_ref().map(|j| j.status) {
        Some(deai_ledger::state::JobStatus::Accepted) => "accepted",
        Some(deai_ledger::state::JobStatus::Rejected) => "rejected",
        Some(deai_ledger::state::JobStatus::Expired) => "expired",
        Some(deai_ledger::state::JobStatus::Unresolved) => "unresolved",
        _ => "pending",
    };
    let mut view = json!({
        "id": id,
        "job": job,
        "verification": verification,
        "receipt": receipt,
        "ledger": on_chain.map(|j| json!({
            "status": j.status,
            "worker": j.worker.map(hex::encode),
            "escrow": j.escrow,
            "receipt_digest_matches": digest_matches,
            "verdicts": j.verdicts,
            "settlement": j.settlement,
            "opened_at": j.opened_at,
        })),
    });
    if let Some(c) = conversation {
        view["conversation"] = c;
    }
    Ok(view)
}
