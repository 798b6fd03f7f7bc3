//! `deai status`: the network's economics from a chain node (and each worker's own
//! compute-time counter): validators, workers with their earnings, slashes and revenue per
//! compute-hour, what every other contributor kind earned (model royalties, datasets, apps,
//! gateways, delegators), jobs by status, supply, treasury and burns.

use anyhow::Result;
use clap::Args;
use deai_client::blocking::ChainClient;
use deai_node::worker_client::WorkerClient;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Args)]
pub struct StatusArgs {
    /// A chain node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:27100")]
    url: String,
    #[arg(long)]
    json: bool,
}

const STATUSES: [&str; 7] = [
    "open",
    "receipted",
    "challenged",
    "accepted",
    "rejected",
    "expired",
    "unresolved",
];

/// Milliseconds a worker reports having spent on jobs, if it answers.
fn compute_ms(chain: &ChainClient, endpoint: &str) -> Option<u64> {
    let w = WorkerClient::new(endpoint, Duration::from_secs(3), Duration::from_secs(3));
    chain.block_on(w.health())?["compute_ms"].as_u64()
}

/// A validator's mean blocks from a job's sampling to its committee verdict, if it gave any.
fn latency(v: &Value) -> Value {
    match (v["committee_votes"].as_u64(), v["latency_blocks"].as_u64()) {
        (Some(n), Some(total)) if n > 0 => json!(total as f64 / n as f64),
        _ => Value::Null,
    }
}

pub fn status(a: StatusArgs) -> Result<()> {
    let chain = ChainClient::new(&a.url)?;
    let s = chain.status()?;
    let vals = chain.validators_json()?;
    let workers = chain.workers_json()?;
    let mut jobs = serde_json::Map::new();
    for st in STATUSES {
        jobs.insert(st.into(), chain.jobs_total(st)?.into());
    }
    let mut wl = Vec::new();
    for w in workers["workers"].as_array().into_iter().flatten() {
        let rec = &w["worker"];
        let earned = rec["earned"].as_u64().unwrap_or(0);
        let ms = compute_ms(&chain, rec["endpoint"].as_str().unwrap_or_default());
        let per_hour = ms
            .filter(|&m| m > 0)
            .map(|m| earned as f64 / (m as f64 / 3.6e6));
        wl.push(json!({
            "address": w["address"], "active": rec["active"], "stake": w["stake"],
            "price_per_1k": rec["price_per_1k"], "jobs_done": rec["jobs_done"],
            "jobs_rejected": rec["jobs_rejected"], "tokens_served": rec["tokens_served"],
            "earned": earned, "slashed": rec["slashed"], "compute_ms": ms,
            "revenue_per_compute_hour": per_hour, "endpoint": rec["endpoint"],
        }));
    }
    let vl: Vec<Value> = vals["validators"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let r = &v["validator"];
            json!({ "address": v["address"], "stake": v["stake"],
                    "verdicts": r["verdicts"], "earned": r["earned"],
                    "assigned": r["assigned"], "missed": r["missed"], "wrong": r["wrong"],
                    "slashed": r["slashed"],
                    "latency_blocks": latency(r) })
        })
        .collect();
    let c = chain.contributors_json()?;
    let contributors = contributor_totals(&c);
    let out = json!({
        "height": s["height"], "supply": s["supply"], "treasury": s["treasury"],
        "burned": s["burned"], "total_stake": s["total_stake"],
        "validators": vl, "workers": wl, "jobs": jobs, "contributors": contributors,
    });
    if a.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "height {}  supply {}  treasury {}  burned {}  staked {}",
        s["height"], s["supply"], s["treasury"], s["burned"], s["total_stake"]
    );
    println!("jobs: {}", Value::Object(jobs));
    println!("\nother contributors (earned in all):");
    for (kind, v) in contributors.as_object().into_iter().flatten() {
        println!(
            "  {kind:<18} {:>4} of them  earned {:>10}",
            v["count"], v["earned"]
        );
    }
    println!("\nvalidators:");
    for v in &vl {
        println!(
            "  {}…  stake {:>10}  verdicts {:>6}  drawn {:>5}  missed {:>4}  wrong {:>4}  latency {:>6} blocks  earned {:>10}  slashed {:>8}",
            &v["address"].as_str().unwrap_or_default()[..12],
            v["stake"],
            v["verdicts"],
            v["assigned"],
            v["missed"],
            v["wrong"],
            v["latency_blocks"]
                .as_f64()
                .map_or("-".to_string(), |l| format!("{l:.1}")),
            v["earned"],
            v["slashed"]
        );
    }
    println!("\nworkers:");
    for w in &wl {
        let rate = w["revenue_per_compute_hour"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{r:.0}"));
        println!(
            "  {}…  {:<8} stake {:>8}  jobs {:>5} ok / {:>3} rejected  tokens {:>8}  earned {:>8}  slashed {:>6}  revenue/compute-hour {rate}",
            &w["address"].as_str().unwrap_or_default()[..12],
            if w["active"] == true { "active" } else { "inactive" },
            w["stake"],
            w["jobs_done"],
            w["jobs_rejected"],
            w["tokens_served"],
            w["earned"],
            w["slashed"],
        );
    }
    Ok(())
}

/// Per contributor kind beyond workers and validators: how many there are and what they
/// earned (royalties paid per model, dataset owners, app owners, gateway fees, and the value
/// delegators hold).
fn contributor_totals(c: &Value) -> Value {
    let sum = |list: &str, f: &dyn Fn(&Value) -> u64| -> Value {
        let items = c[list].as_array().cloned().unwrap_or_default();
        let earned: u64 = items.iter().map(f).sum();
        json!({ "count": items.len(), "earned": earned })
    };
    json!({
        "model royalties": sum("royalties", &|r| r["royalty"]["paid"].as_u64().unwrap_or(0)),
        "datasets": sum("datasets", &|d| d["dataset"]["earned"].as_u64().unwrap_or(0)),
        "apps": sum("apps", &|a| a["app"]["earned"].as_u64().unwrap_or(0)),
        "gateways": sum("gateways", &|g| g["allowance"]["earned"].as_u64().unwrap_or(0)),
        "delegations (value)": sum("delegations", &|d| d["value"].as_u64().unwrap_or(0)),
    })
}
