//! `deai run --receipt`, `deai keys`, `deai verify` and `deai inspect`: thin wrappers around
//! `deai-proof` (receipts, activation proofs, verification).

use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use deai_client::blocking::ChainClient;
use deai_engine::{Engine, EngineConfig, GenParams, Generation};
use deai_proof::{build_receipt, JobSpec, ProofConfig, Receipt, SigningKey};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a signing key (default: the worker key $DEAI_HOME/keys/worker.key, kept if it
    /// exists) and print its public key, which is also the node's ledger address.
    New {
        /// Write a new key here instead (refuses to overwrite an existing file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a key's public key (default: the worker key).
    Show {
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Receipt file written by `deai run --receipt`.
    pub receipt: PathBuf,
    /// Print {"verdict": ..., "checks": [...]}.
    #[arg(long)]
    pub json: bool,
    /// Model to verify with (default: the installed model whose id the receipt names).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Kernel threads.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Also check the ledger at this chain node: a state proof of the job, checked against
    /// the validators' finality certificate, shows the receipt's digest, its signer as the
    /// job's assigned worker and poster, the model and the billed tokens on chain, and the
    /// job's settlement.
    #[arg(long, value_name = "URL")]
    pub onchain: Option<String>,
    /// The chain's genesis.json: the validator set the proof must be signed by (default:
    /// ask the node, which then has to be trusted for the validator set).
    #[arg(long, requires = "onchain")]
    pub genesis: Option<PathBuf>,
    /// A foreign kernel profile to compare within the calibrated cross-profile thresholds
    /// (repeatable). Receipts under any other profile than this machine's are rejected.
    #[arg(long, value_name = "PROFILE_ID")]
    pub cross_profile: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Receipt file.
    pub receipt: PathBuf,
    /// Print the full JSON view.
    #[arg(long)]
    pub json: bool,
}

pub fn key_path() -> PathBuf {
    deai_models::default_home().join("keys").join("worker.key")
}

fn read_key(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{}: not hex", path.display()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The worker key, created on first use.
pub fn load_or_create_key() -> Result<SigningKey> {
    let path = key_path();
    if path.exists() {
        return read_key(&path);
    }
    let dir = path.parent().context("key path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = deai_proof::generate_key();
    let tmp = dir.join(format!(".worker.key.{}", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        std::io::Write::write_all(
            &mut f,
            format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
        )?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "created worker key {} (public {})",
        path.display(),
        hex::encode(key.verifying_key().to_bytes())
    );
    Ok(key)
}

pub fn keys(c: KeysCmd) -> Result<()> {
    let key = match c {
        KeysCmd::New { out: None } => load_or_create_key()?,
        KeysCmd::New { out: Some(path) } => {
            if path.exists() {
                bail!("{} exists; not overwriting a key", path.display());
            }
            let key = deai_proof::generate_key();
            deai_chain::local::write_key(&path, &key.to_bytes())?;
            key
        }
        KeysCmd::Show { key: None } => {
            read_key(&key_path()).context("no worker key (run `deai keys new`)")?
        }
        KeysCmd::Show { key: Some(path) } => read_key(&path)?,
    };
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(())
}

/// Sign and write the receipt of a finished `deai run`.
pub fn write_receipt(
    model: &ModelArgs,
    engine: &Engine,
    g: &Generation,
    params: &GenParams,
    out: &Path,
) -> Result<()> {
    let key = load_or_create_key()?;
    let path = crate::resolve_model(model.model.as_deref())?;
    let model_id = deai_models::sha256_file(&path)?;
    let job = JobSpec {
        model_id,
        prompt_tokens: g.prompt_tokens.clone(),
        params: params.clone(),
        nonce: deai_proof::random_nonce(),
    };
    let r = build_receipt(
        &job,
        g,
        engine.model.cfg.d_model,
        &engine.profile(),
        ProofConfig::default(),
        &key,
    )?;
    std::fs::write(out, r.to_json() + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "[receipt {}: job {}, proof {} bytes ({:.1} B/token)]",
        out.display(),
        hex::encode(&r.job_id[..6]),
        r.proof.encoded_len(),
        r.proof.encoded_len() as f64 / r.output_tokens.len().max(1) as f64
    );
    Ok(())
}

fn read_receipt(path: &Path) -> Result<Receipt> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Receipt::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `deai verify`: exit 0 accept, 1 reject, 2 error.
pub fn verify(a: VerifyArgs) -> ! {
    exit_with_verdict(verify_inner(&a))
}

/// Exits as the checking commands do (`deai verify`, `deai train audit`): 0 when the check
/// passed, 1 when it found a fault, 2 (with the error on stderr) when it could not run.
pub fn exit_with_verdict(r: Result<bool>) -> ! {
    match r {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

fn verify_inner(a: &VerifyArgs) -> Result<bool> {
    let r = read_receipt(&a.receipt)?;
    let spec = a.model.clone().unwrap_or_else(|| r.model_id.to_hex());
    let store = deai_models::ModelStore::open_default()?;
    let path = store
        .resolve(Some(&spec), a.model.is_some(), !a.json)
        .with_context(|| format!("model {spec} (install it or pass -m)"))?
        .path;
    let model_id = deai_models::sha256_file(&path)?;
    let mut cfg = EngineConfig::default();
    if let Some(t) = a.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        cfg.threads = t;
    }
    let engine = Engine::load(&path, cfg).with_context(|| format!("loading {}", path.display()))?;
    let t0 = std::time::Instant::now();
    let cfg = deai_proof::VerifyConfig {
        cross_profiles: a.cross_profile.clone(),
        ..Default::default()
    };
    let mut rep = deai_proof::verify_with(&r, &engine, &model_id, &cfg);
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Some(url) = &a.onchain {
        let checks = onchain_checks(&r, url.trim_end_matches('/'), a.genesis.as_deref())?;
        if checks.iter().any(|c| !c.ok) {
            rep.verdict = deai_proof::Verdict::Reject;
        }
        rep.checks.extend(checks);
    }
    if a.json {
        let checks: Vec<serde_json::Value> = rep
            .checks
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"verdict": rep.verdict, "checks": checks})
        );
    } else {
        for c in &rep.checks {
            let pos = c.position.map(|p| format!(" (at {p})")).unwrap_or_default();
            println!(
                "{:>4}  {:<18} {}{pos}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        match rep.first_failure() {
            None => println!("ACCEPT ({ms:.0} ms)"),
            Some(c) => println!("REJECT: first failing check {} ({ms:.0} ms)", c.name),
        }
    }
    Ok(rep.accepted())
}

/// The ledger side of `deai verify --onchain`: the job's record, proven against the
/// finality certificate of a validator quorum, must match this receipt
/// (`deai_node::onchain::receipt_matches_job`), and must not have been rejected.
fn onchain_checks(
    r: &Receipt,
    url: &str,
    genesis: Option<&Path>,
) -> Result<Vec<deai_proof::Check>> {
    let validators: Vec<[u8; 32]> = match genesis {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let g: deai_ledger::state::Genesis = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a genesis file", p.display()))?;
            let state = deai_ledger::State::from_genesis(&g)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            state.validator_set().to_vec()
        }
        None => {
            eprintln!("note: genesis validator set taken from {url} (pass --genesis to pin it)");
            let s = ChainClient::new(url)?.status()?;
            s["genesis_validator_set"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let mut a = [0u8; 32];
                    hex::decode_to_slice(v.as_str().unwrap_or_default(), &mut a)
                        .map(|_| a)
                        .context("bad validator address from the node")
                })
                .collect::<Result<_>>()?
        }
    };
    let job = deai_types::Hash256(r.job_id);
    let key = deai_ledger::state::Key::Job(job);
    let check = |name: &str, ok: bool, detail: String| deai_proof::Check {
        name: name.into(),
        ok,
        detail,
        position: None,
    };
    let v = ChainClient::new(url)?.state_proof("job", &job.to_string())?;
    let sp: deai_chain::lightclient::StateProof =
        serde_json::from_value(v).context("the node's state proof is malformed")?;
    let proven = match deai_chain::lightclient::verify_state_proof(&validators, &key, &sp) {
        Ok(p) => p,
        Err(e) => return Ok(vec![check("onchain_proof", false, e)]),
    };
    let Some(bytes) = proven.value else {
        return Ok(vec![check(
            "onchain_proof",
            false,
            format!(
                "the finalized state at height {} proves job {job} absent",
                proven.height
            ),
        )]);
    };
    let mut out = vec![check(
        "onchain_proof",
        true,
        format!(
            "job record proven at height {} (state root {}) by a quorum of {} validators",
            proven.height,
            proven.state_root.short(),
            validators.len()
        ),
    )];
    let j: deai_ledger::state::Job =
        deai_ledger::state::decode_record(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    out.push(match deai_node::onchain::receipt_matches_job(r, &job, &j) {
        Err(m) => check("onchain_receipt", false, m.to_string()),
        Ok(rec) => check(
            "onchain_receipt",
            true,
            format!(
                "digest {} posted by the signer at height {}",
                rec.digest.short(),
                rec.posted_at
            ),
        ),
    });
    // The profile the worker registered, proven like the job: a receipt may not declare
    // another one to be judged by looser cross-profile thresholds.
    let wkey = deai_ledger::state::Key::Worker(r.worker_key);
    let v = ChainClient::new(url)?.state_proof("worker", &hex::encode(r.worker_key))?;
    let sp: deai_chain::lightclient::StateProof =
        serde_json::from_value(v).context("the node's state proof is malformed")?;
    out.push(
        match deai_chain::lightclient::verify_state_proof(&validators, &wkey, &sp) {
            Err(e) => check("onchain_profile", false, e.to_string()),
            Ok(p) => {
                let w: Option<deai_ledger::state::Worker> = match p.value {
                    Some(b) => Some(
                        deai_ledger::state::decode_record(&b).map_err(|e| anyhow::anyhow!(e))?,
                    ),
                    None => None,
                };
                match deai_node::onchain::receipt_matches_worker(r, w.as_ref()) {
                    Err(m) => check("onchain_profile", false, m.to_string()),
                    Ok(()) => check(
                        "onchain_profile",
                        true,
                        format!("kernel profile {} as its worker registered", r.profile_id),
                    ),
                }
            }
        },
    );
    use deai_ledger::state::JobStatus;
    let (ok, detail) = match j.status {
        JobStatus::Accepted => (true, format!("accepted and settled: {:?}", j.settlement)),
        JobStatus::Receipted | JobStatus::Sampled | JobStatus::Challenged => {
            (true, format!("{:?}: verdicts pending", j.status))
        }
        s => (false, format!("{s:?}")),
    };
    out.push(check("onchain_status", ok, detail));
    Ok(out)
}

/// `deai inspect`.
pub fn inspect(a: InspectArgs) -> Result<()> {
    let r = read_receipt(&a.receipt)?;
    if a.json {
        println!("{}", r.to_json());
        return Ok(());
    }
    let sig = match r.verify_signature() {
        Ok(()) => "valid".to_string(),
        Err(e) => e,
    };
    let s = &r.sampling;
    let n = r.output_tokens.len();
    println!("receipt v{}", r.version);
    println!("  job            {}", hex::encode(r.job_id));
    println!("  model          {}", r.model_id);
    println!("  kernel profile {} ({})", r.profile_id, r.profile_detail);
    println!("  prompt         {} tokens", r.prompt_tokens.len());
    println!(
        "  output         {n} tokens, stop reason {:?}",
        r.stop_reason
    );
    println!(
        "  sampling       temperature {} top_k {} top_p {} seed {}; max_tokens {}; stop {:?}",
        s.temperature, s.top_k, s.top_p, s.seed, r.max_tokens, r.stop
    );
    println!(
        "  proof          {} chunks of {} tokens, top-k {}, {} bytes ({:.2} B/token)",
        r.proof.chunks.len(),
        r.proof.chunk_size,
        r.proof.top_k,
        r.proof.encoded_len(),
        r.proof.encoded_len() as f64 / n.max(1) as f64
    );
    println!(
        "  timings        prefill {:.1} ms, decode {:.1} ms, proof {:.2} ms",
        r.timings.prefill_us as f64 / 1e3,
        r.timings.decode_us as f64 / 1e3,
        r.timings.proof_us as f64 / 1e3
    );
    println!("  worker         {}", hex::encode(r.worker_key));
    println!("  signature      {sig}");
    Ok(())
}
