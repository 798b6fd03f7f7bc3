//! The node's HTTP/JSON API (versioned under `/v1`): submit transactions, query finalized
//! state and blocks, and fetch state proofs with finality certificates.
//!
//! Every error is a JSON body `{"error": "..."}` with a 4xx/5xx status; bad paths, bodies
//! and ids never panic the node.

use crate::app::{App, Scheme, TxAt};
use crate::block::Block;
use crate::lightclient::{encode_certificate, StateProof};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use commonware_consensus::marshal;
use commonware_consensus::types::Height;
use deai_ledger::state::{JobStatus, Key};
use deai_ledger::{Address, SignedTx};
use deai_types::Hash256;
use serde::Deserialize;
use serde_json::{json, Value};

pub type Marshal = marshal::core::Mailbox<Scheme, marshal::standard::Standard<Block>>;

#[derive(Clone)]
pub struct Api {
    pub app: App,
    /// Finality certificates for state proofs; `None` serves no proofs (an API over a bare
    /// [`App`], as `deai bench explorer` builds).
    pub marshal: Option<Marshal>,
    /// This node's validator address.
    pub me: Address,
    pub evidence: Option<crate::node::EvidenceRecorder>,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

type R = Result<Json<Value>, ApiError>;

fn parse_addr(s: &str) -> Result<Address, ApiError> {
    let mut a = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut a)
        .map_err(|_| bad("an address is 64 hex characters (an ed25519 public key)"))?;
    Ok(a)
}

fn parse_hash(s: &str) -> Result<Hash256, ApiError> {
    s.parse::<Hash256>()
        .map_err(|e| bad(format!("bad id: {e}")))
}

/// Transactions are accepted as JSON `{"tx": {...}}` or `{"hex": "..."}`.
#[derive(Deserialize)]
struct Submit {
    tx: Option<SignedTx>,
    hex: Option<String>,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/tx", post(submit))
        .route("/v1/tx/{id}", get(tx_status))
        .route("/v1/account/{addr}", get(account))
        .route("/v1/account/{addr}/txs", get(account_txs))
        .route("/v1/worker/{addr}", get(worker))
        .route("/v1/workers", get(workers))
        .route("/v1/validators", get(validators))
        .route("/v1/allowance/{client}/{gateway}", get(allowance))
        .route("/v1/contributors", get(contributors))
        .route("/v1/app/{id}", get(app))
        .route("/v1/job/{id}", get(job))
        .route("/v1/jobs", get(jobs))
        .route("/v1/training/{id}", get(training))
        .route("/v1/trainings", get(trainings))
        .route("/v1/proposal/{id}", get(proposal))
        .route("/v1/proposals", get(proposals))
        .route("/v1/search", get(search))
        .route("/v1/params", get(params))
        .route("/v1/beacon", get(beacon))
        .route("/v1/beacon/{round}", get(beacon_round))
        .route("/v1/block/{height}", get(block))
        .route("/v1/blocks", get(blocks))
        .route("/v1/proof/{kind}/{id}", get(proof))
        .route("/v1/evidence", get(evidence))
        .merge(deai_explorer::router(deai_explorer::UiConfig::CHAIN))
        .fallback(|| async { not_found("no such route; see /v1/status") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(api)
}

async fn status(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let last = api.app.block(s.height());
    Ok(Json(json!({
        "chain_id": s.chain_id(),
        "height": s.height(),
        "state_root": s.root(),
        "block_digest": last.map(|b| b.digest),
        "node": hex::encode(api.me),
        "mempool": api.app.mempool_len(),
        "validators": s.active_validators().iter().map(|(a, st)| json!({"address": hex::encode(a), "stake": st})).collect::<Vec<_>>(),
        // Consensus: the epoch of the next block, and the set that finalizes it.
        "epoch": s.epoch_of(s.height() + 1),
        "epoch_length": s.meta().epoch_length,
        "validator_set": s.validator_set().iter().map(hex::encode).collect::<Vec<_>>(),
        // Where a light client starts (proofs carry the hand-offs from it).
        "genesis_validator_set": api.app.epochs().get(0).map(|e| e.participants.iter().map(|k| hex::encode(crate::node::address(k))).collect::<Vec<_>>()),
        "supply": s.meta().supply,
        "burned": s.meta().burned,
        "treasury": s.meta().treasury,
        "total_stake": s.meta().total_stake,
        "txs_total": api.app.txs_total(),
        "jobs_total": api.app.jobs_newest(0, 0).0,
        "observed": api.app.observed(),
    })))
}

async fn submit(
    AxState(api): AxState<Api>,
    body: Result<Json<Submit>, axum::extract::rejection::JsonRejection>,
) -> R {
    let Json(body) = body.map_err(|e| bad(format!("body: {e}")))?;
    let tx = match (body.tx, body.hex) {
        (Some(t), None) => t,
        (None, Some(h)) => {
            let bytes = hex::decode(h.trim()).map_err(|e| bad(format!("hex: {e}")))?;
            SignedTx::decode(&bytes).map_err(|e| bad(format!("transaction: {e}")))?
        }
        _ => {
            return Err(bad(
                "give exactly one of \"tx\" (JSON) or \"hex\" (canonical bytes)",
            ))
        }
    };
    let id = api.app.submit(tx).map_err(|e| bad(e.to_string()))?;
    Ok(Json(json!({ "id": id })))
}

async fn tx_status(AxState(api): AxState<Api>, Path(id): Path<String>) -> R {
    let id = parse_hash(&id)?;
    if let Some((height, index, tx, outcome)) = api.app.tx(&id) {
        return Ok(Json(json!({
            "id": id, "status": "finalized", "height": height, "index": index,
            "error": outcome.error, "tx": tx,
        })));
    }
    if api.app.is_pending(&id) {
        return Ok(Json(json!({ "id": id, "status": "pending" })));
    }
    Err(not_found(format!(
        "transaction {id} is neither pending here nor finalized"
    )))
}

async fn account(AxState(api): AxState<Api>, Path(a): Path<String>) -> R {
    let a = parse_addr(&a)?;
    let s = api.app.finalized_state();
    Ok(Json(json!({
        "height": s.height(), "address": hex::encode(a), "account": s.account(&a),
        // Past the finalized nonce and this node's pending transactions of the account
        // (another signer with the same key, such as the evidence reporter, included).
        "next_nonce": api.app.next_nonce(&a),
    })))
}

#[derive(Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// One finalized transaction in a list: where it landed, what it is, and its outcome.
fn tx_row(t: &TxAt) -> Value {
    let kind = serde_json::to_value(&t.tx.tx.kind).unwrap_or(Value::Null);
    let mut row = json!({
        "id": t.outcome.id, "height": t.height, "index": t.index,
        "type": kind["type"], "from": hex::encode(t.tx.tx.from), "error": t.outcome.error,
    });
    // The job a transaction is about (inference and training jobs alike).
    if let Some(job) = kind.get("job") {
        row["job"] = job.clone();
    }
    // A verdict's `accept` or a governance vote's `yes`.
    if let Some(yes) = kind.get("accept").or_else(|| kind.get("yes")) {
        row["yes"] = yes.clone();
    }
    row
}

/// `GET /v1/account/{addr}/txs?offset=&limit=`: transactions sent by the account or
/// transferring to it, newest first.
async fn account_txs(
    AxState(api): AxState<Api>,
    Path(a): Path<String>,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let a = parse_addr(&a)?;
    let limit = q.limit.unwrap_or(20).min(100);
    let (total, txs) = api.app.account_txs(&a, q.offset.unwrap_or(0), limit);
    Ok(Json(json!({
        "height": api.app.finalized_height(), "address": hex::encode(a), "total": total,
        "txs": txs.iter().map(tx_row).collect::<Vec<_>>(),
    })))
}

async fn worker(AxState(api): AxState<Api>, Path(a): Path<String>) -> R {
    let a = parse_addr(&a)?;
    let s = api.app.finalized_state();
    let w = s.worker(&a).ok_or_else(|| not_found("no such worker"))?;
    Ok(Json(
        json!({ "height": s.height(), "address": hex::encode(a), "worker": w, "stake": s.account(&a).stake }),
    ))
}

async fn workers(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let list: Vec<Value> = s
        .workers()
        .map(
            |(a, w)| json!({ "address": hex::encode(a), "worker": w, "stake": s.account(a).stake }),
        )
        .collect();
    Ok(Json(json!({ "height": s.height(), "workers": list })))
}

async fn validators(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let list: Vec<Value> = s
        .validators()
        .map(|(a, v)| {
            json!({ "address": hex::encode(a), "validator": v, "stake": s.account(a).stake,
                    "weight": s.weight(a) })
        })
        .collect();
    Ok(Json(json!({ "height": s.height(), "validators": list })))
}

/// `GET /v1/allowance/{client}/{gateway}`: what `client` still lets `gateway` escrow for it
/// (`allowance` is null when it never authorized it, or revoked it).
async fn allowance(
    AxState(api): AxState<Api>,
    Path((client, gateway)): Path<(String, String)>,
) -> R {
    let (client, gateway) = (parse_addr(&client)?, parse_addr(&gateway)?);
    let s = api.app.finalized_state();
    Ok(Json(json!({
        "height": s.height(),
        "allowance": s.allowance(&client, &gateway),
    })))
}

/// `GET /v1/app/{id}`: a registered app (owner, name, fee, jobs, earned); 404 if none.
async fn app(AxState(api): AxState<Api>, Path(id): Path<String>) -> R {
    let id = parse_hash(&id)?;
    let s = api.app.finalized_state();
    let a = s
        .app(&id)
        .ok_or_else(|| not_found(format!("no app {id}")))?;
    Ok(Json(json!({ "height": s.height(), "id": id, "app": a })))
}

/// `GET /v1/contributors`: everyone a job's fee reaches besides workers and validators:
/// models' royalties, datasets, apps, gateways (allowances), delegations, and the treasury.
async fn contributors(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let royalties: Vec<Value> = s
        .royalties()
        .map(|(m, r)| json!({ "model": m, "royalty": r }))
        .collect();
    let datasets: Vec<Value> = s
        .datasets()
        .map(|(id, d)| json!({ "id": id, "dataset": d }))
        .collect();
    let apps: Vec<Value> = s
        .apps()
        .map(|(id, a)| json!({ "id": id, "app": a }))
        .collect();
    let gateways: Vec<Value> = s
        .allowances()
        .map(|((c, g), a)| {
            json!({ "client": hex::encode(c), "gateway": hex::encode(g), "allowance": a })
        })
        .collect();
    let delegations: Vec<Value> = s
        .delegations()
        .map(|((d, v), x)| {
            json!({ "delegator": hex::encode(d), "validator": hex::encode(v),
                    "shares": x.shares, "value": s.share_value(v, x.shares) })
        })
        .collect();
    Ok(Json(json!({
        "height": s.height(),
        "treasury": s.meta().treasury,
        "delegated": s.meta().delegated,
        "royalties": royalties,
        "datasets": datasets,
        "apps": apps,
        "gateways": gateways,
        "delegations": delegations,
    })))
}

async fn job(AxState(api): AxState<Api>, Path(id): Path<String>) -> R {
    let id = parse_hash(&id)?;
    let s = api.app.finalized_state();
    let j = s
        .job(&id)
        .ok_or_else(|| not_found(format!("no job {id}")))?;
    let trail: Vec<Value> = api.app.job_trail(&id).iter().map(tx_row).collect();
    Ok(Json(
        json!({ "height": s.height(), "id": id, "job": j, "trail": trail }),
    ))
}

/// `GET /v1/training/{id}`: a training job as finalized (escrow, rounds, checkpoint).
async fn training(AxState(api): AxState<Api>, Path(id): Path<String>) -> R {
    let id = parse_hash(&id)?;
    let s = api.app.finalized_state();
    let t = s
        .training(&id)
        .ok_or_else(|| not_found(format!("no training job {id}")))?;
    Ok(Json(
        json!({ "height": s.height(), "id": id, "training": t }),
    ))
}

#[derive(Deserialize)]
struct TrainingsQuery {
    /// Only jobs with a proposed round waiting for verdicts (what validators judge).
    pending: Option<bool>,
}

/// `GET /v1/trainings[?pending=true]`: finalized training jobs, newest first (at most
/// 1000); with `pending=true` only those whose proposed round waits for verdicts.
async fn trainings(
    AxState(api): AxState<Api>,
    q: Result<Query<TrainingsQuery>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let s = api.app.finalized_state();
    let mut list: Vec<_> = s
        .trainings()
        .filter(|(_, t)| !q.pending.unwrap_or(false) || t.pending.is_some())
        .collect();
    list.sort_by_key(|(id, t)| (std::cmp::Reverse(t.opened_at), **id));
    let list: Vec<Value> = list
        .into_iter()
        .take(1000)
        .map(|(id, t)| json!({ "id": id, "training": t }))
        .collect();
    Ok(Json(json!({ "height": s.height(), "trainings": list })))
}

#[derive(Deserialize)]
struct JobQuery {
    /// Only jobs in this status (`open`, `receipted`, `challenged`, `accepted`, ...).
    status: Option<String>,
    /// Only jobs of this client or worker (hex address).
    account: Option<String>,
    /// Only jobs whose committee names this validator (hex address).
    member: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    /// `newest` (default: by opening height, newest first) or `deadline` (the current
    /// phase's deadline, soonest first: what a verifier should check next).
    order: Option<String>,
}

/// `GET /v1/jobs?status=receipted&account=HEX&member=HEX&limit=N&order=newest|deadline`: finalized jobs,
/// newest first or soonest deadline first.
async fn jobs(
    AxState(api): AxState<Api>,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let status: Option<JobStatus> = q
        .status
        .as_deref()
        .map(|st| {
            serde_json::from_value(Value::String(st.to_string())).map_err(|_| {
                bad(format!(
                    "unknown status {st:?}: open, receipted, sampled, challenged, accepted, \
                     rejected, expired or unresolved"
                ))
            })
        })
        .transpose()?;
    let account = q.account.as_deref().map(parse_addr).transpose()?;
    let member = q.member.as_deref().map(parse_addr).transpose()?;
    let by_deadline = match q.order.as_deref() {
        None | Some("newest") => false,
        Some("deadline") => true,
        Some(o) => return Err(bad(format!("unknown order {o:?}: newest or deadline"))),
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let s = api.app.finalized_state();
    if status.is_none() && account.is_none() && member.is_none() && !by_deadline {
        // Unfiltered (the explorer's jobs page and overview): a page of the open-order index.
        let (total, ids) = api.app.jobs_newest(q.offset.unwrap_or(0), limit);
        let list: Vec<Value> = ids
            .iter()
            .filter_map(|id| s.job(id).map(|j| json!({ "id": id, "job": j })))
            .collect();
        return Ok(Json(
            json!({ "height": s.height(), "total": total, "jobs": list }),
        ));
    }
    let mut list: Vec<(&Hash256, &deai_ledger::state::Job)> = s
        .jobs()
        .filter(|(_, j)| status.is_none_or(|st| j.status == st))
        .filter(|(_, j)| account.is_none_or(|a| j.client == a || j.worker == Some(a)))
        .filter(|(_, j)| member.is_none_or(|m| j.committee.contains(&m)))
        .collect();
    if by_deadline {
        list.sort_by_key(|(id, j)| (j.deadline, **id));
    } else {
        list.sort_by_key(|(id, j)| (std::cmp::Reverse(j.opened_at), **id));
    }
    let total = list.len();
    let list: Vec<Value> = list
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .map(|(id, j)| json!({ "id": id, "job": j }))
        .collect();
    Ok(Json(
        json!({ "height": s.height(), "total": total, "jobs": list }),
    ))
}

async fn proposal(AxState(api): AxState<Api>, Path(id): Path<String>) -> R {
    let id: u64 = id.parse().map_err(|_| bad("a proposal id is a number"))?;
    let s = api.app.finalized_state();
    let p = s
        .proposal(id)
        .ok_or_else(|| not_found(format!("no proposal {id}")))?;
    Ok(Json(json!({ "height": s.height(), "proposal": p })))
}

/// `GET /v1/proposals`: every governance proposal, newest first.
async fn proposals(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let mut list: Vec<&deai_ledger::state::Proposal> = s.proposals().map(|(_, p)| p).collect();
    list.sort_by_key(|p| std::cmp::Reverse(p.id));
    Ok(Json(json!({ "height": s.height(), "proposals": list })))
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

/// `GET /v1/search?q=`: what a height, id or address names. Numbers are block heights,
/// `p7` / `proposal 7` proposals; 64 hex digits are looked up as a transaction, block
/// digest, worker, validator, job, then an account that has a balance, stake or transactions.
async fn search(
    AxState(api): AxState<Api>,
    q: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let q = q.q.unwrap_or_default();
    let q = q.trim();
    if q.is_empty() {
        return Err(bad(
            "search for a block height, a 64-hex id or an account address",
        ));
    }
    if q.len() > 128 {
        return Err(bad("a search is at most 128 characters"));
    }
    let found = |kind: &str, id: String| Ok(Json(json!({ "kind": kind, "id": id })));
    let lower = q.to_ascii_lowercase();
    let hexish = lower.strip_prefix("0x").unwrap_or(&lower);
    let is_id = hexish.len() == 64 && hexish.bytes().all(|b| b.is_ascii_hexdigit());
    if let (false, Ok(h)) = (is_id, q.parse::<u64>()) {
        if h <= api.app.finalized_height() {
            return found("block", h.to_string());
        }
        return Err(not_found(format!(
            "no finalized block at height {h} (the tip is {})",
            api.app.finalized_height()
        )));
    }
    let prop = lower
        .strip_prefix("proposal")
        .or_else(|| lower.strip_prefix('p'))
        .map(|r| r.trim_start_matches([' ', '#']));
    if let Some(Ok(id)) = prop.map(str::parse::<u64>) {
        let s = api.app.finalized_state();
        return match s.proposal(id) {
            Some(_) => found("proposal", id.to_string()),
            None => Err(not_found(format!("no proposal {id}"))),
        };
    }
    if !is_id {
        return Err(bad(format!(
            "{q:?} is neither a block height nor a 64-hex-digit id or address"
        )));
    }
    let h = parse_hash(hexish)?;
    let s = api.app.finalized_state();
    if api.app.tx(&h).is_some() || api.app.is_pending(&h) {
        return found("tx", h.to_string());
    }
    if let Some(height) = api.app.height_of(&h) {
        return found("block", height.to_string());
    }
    let a = h.0;
    if s.worker(&a).is_some() {
        return found("worker", hexish.to_string());
    }
    if s.validator(&a).is_some() {
        return found("validator", hexish.to_string());
    }
    // Job ids are chosen by clients: they come after what they could otherwise shadow.
    if s.job(&h).is_some() {
        return found("job", h.to_string());
    }
    let acct = s.account(&a);
    if acct.balance > 0 || acct.stake > 0 || acct.nonce > 0 || api.app.account_seen(&a) {
        return found("account", hexish.to_string());
    }
    Err(not_found(format!(
        "nothing on this chain has id {hexish}: no transaction, job, block, worker, validator \
         or account with a balance"
    )))
}

/// `GET /v1/beacon`: the beacon key (without its encoded output), the rounds waiting for
/// partial signatures (with the player indexes that signed each) and the latest recovered.
async fn beacon(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    let Some(b) = &s.meta().beacon else {
        return Ok(Json(json!({ "height": s.height(), "beacon": null })));
    };
    let pending: Vec<Value> = s
        .beacon_pending()
        .into_iter()
        .filter_map(|r| s.beacon_round(r))
        .map(|r| {
            let signed: Vec<u32> = r.partials.iter().map(|(i, _)| *i).collect();
            json!({ "round": r.round, "jobs": r.jobs.len(), "signed": signed })
        })
        .collect();
    let latest = s
        .beacon_rounds()
        .rev()
        .find(|(_, r)| r.value.is_some())
        .map(|(_, r)| json!({ "round": r.round, "value": r.value, "at": r.at }));
    Ok(Json(json!({
        "height": s.height(),
        "beacon": {
            "group_key": hex::encode(&b.group_key),
            "players": b.players.iter().map(hex::encode).collect::<Vec<_>>(),
            "quorum": b.quorum,
            "period": b.period,
        },
        "pending": pending,
        "latest": latest,
    })))
}

/// `GET /v1/beacon/{round}`: one beacon round (its receipts, partials and value).
async fn beacon_round(AxState(api): AxState<Api>, Path(r): Path<String>) -> R {
    let r: u64 = r.parse().map_err(|_| bad("a beacon round is a number"))?;
    let s = api.app.finalized_state();
    let b = s
        .beacon_round(r)
        .ok_or_else(|| not_found(format!("no receipt awaits beacon round {r}")))?;
    Ok(Json(json!({ "height": s.height(), "round": b })))
}

async fn params(AxState(api): AxState<Api>) -> R {
    let s = api.app.finalized_state();
    Ok(Json(json!({ "height": s.height(), "params": s.params() })))
}

async fn block(AxState(api): AxState<Api>, Path(h): Path<String>) -> R {
    let h: u64 = h.parse().map_err(|_| bad("a height is a number"))?;
    let b = api
        .app
        .block(h)
        .ok_or_else(|| not_found(format!("no finalized block at height {h}")))?;
    let mut v = serde_json::to_value(b)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["observed_ms"] = json!(api.app.observed_ms(h));
    Ok(Json(v))
}

#[derive(Deserialize)]
struct Range {
    from: Option<u64>,
    /// Blocks below this height, newest first (takes precedence over `from`).
    before: Option<u64>,
    limit: Option<u64>,
}

async fn blocks(
    AxState(api): AxState<Api>,
    q: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| bad(e.to_string()))?;
    let tip = api.app.finalized_height();
    let limit = q.limit.unwrap_or(20).min(100);
    let (from, newest_first) = match q.before {
        Some(before) => (before.min(tip + 1).saturating_sub(limit), true),
        None => (
            q.from
                .unwrap_or(tip.saturating_sub(limit.saturating_sub(1))),
            false,
        ),
    };
    let to = match q.before {
        Some(before) => before.min(tip + 1),
        None => from.saturating_add(limit),
    };
    let mut list: Vec<Value> = api
        .app
        .blocks(from, to)
        .into_iter()
        .map(|b| {
            json!({
                "height": b.header.height, "digest": b.digest, "state_root": b.header.state_root,
                "txs": b.txs.len(), "events": b.events,
                "observed_ms": api.app.observed_ms(b.header.height),
            })
        })
        .collect();
    if newest_first {
        list.reverse();
    }
    Ok(Json(json!({ "tip": tip, "blocks": list })))
}

/// `GET /v1/proof/{account|worker|validator|job|training|proposal|meta}/{id}`.
async fn proof(AxState(api): AxState<Api>, Path((kind, id)): Path<(String, String)>) -> R {
    let key = match kind.as_str() {
        "account" => Key::Account(parse_addr(&id)?),
        "worker" => Key::Worker(parse_addr(&id)?),
        "validator" => Key::Validator(parse_addr(&id)?),
        "job" => Key::Job(parse_hash(&id)?),
        "training" => Key::Training(parse_hash(&id)?),
        "proposal" => Key::Proposal(id.parse().map_err(|_| bad("a proposal id is a number"))?),
        "meta" => Key::Meta,
        other => return Err(bad(format!("unknown record kind {other:?}"))),
    };
    let s = api.app.finalized_state();
    let h = s.height();
    if h == 0 {
        return Err(not_found("nothing finalized yet"));
    }
    let header = api
        .app
        .block(h)
        .ok_or_else(|| not_found("block missing"))?
        .header;
    let marshal = api
        .marshal
        .as_ref()
        .ok_or_else(|| not_found("this API serves no finality certificates"))?;
    let cert = marshal
        .get_finalization(Height::new(h))
        .await
        .ok_or_else(|| not_found(format!("no finality certificate stored for height {h}")))?;
    let (value, proof) = s.prove(&key);
    // How a client that knows only the genesis set learns this epoch's set.
    let epochs = api.app.epochs();
    let mut handoffs = Vec::new();
    for e in epochs.handoffs(epochs.epoch_of(h)) {
        let at = e.floor_height;
        let header = api
            .app
            .block(at)
            .ok_or_else(|| not_found(format!("block {at} missing")))?
            .header;
        let cert = marshal
            .get_finalization(Height::new(at))
            .await
            .ok_or_else(|| {
                not_found(format!("no finality certificate stored for epoch end {at}"))
            })?;
        handoffs.push(StateProof {
            height: at,
            header: hex::encode(header.to_bytes()),
            certificate: encode_certificate(&cert),
            value: e.floor_meta.as_ref().map(hex::encode),
            proof: e.floor_meta_proof,
            handoffs: vec![],
        });
    }
    let p = StateProof {
        height: h,
        header: hex::encode(header.to_bytes()),
        certificate: encode_certificate(&cert),
        value: value.map(hex::encode),
        proof,
        handoffs,
    };
    Ok(Json(serde_json::to_value(p).map_err(|e| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?))
}

/// Equivocation evidence this node's consensus engine has seen.
async fn evidence(AxState(api): AxState<Api>) -> R {
    let list = api
        .evidence
        .as_ref()
        .map(|e| e.evidence())
        .unwrap_or_default();
    Ok(Json(json!({ "evidence": list })))
}
