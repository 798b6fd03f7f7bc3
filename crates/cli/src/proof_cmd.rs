//! `deai run --receipt`, `deai keys`, `deai verify` and `deai inspect`: thin wrappers around
//! `deai-proof` (receipts, activation proofs, verification).

use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
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
    /// the validators' finality certificate, shows the receipt's digest, worker and model on
    /// chain and the job's settlement.
    #[arg(long, value_name = "URL")]
    pub onchain: Option<String>,
    /// The chain's genesis.json: the validator set the proof must be signed by (default:
    /// ask the node, which then has to be trusted for the validator set).
    #[arg(long, requires = "onchain")]
    pub genesis: Option<PathBuf>,
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
    let mut rep = deai_proof::verify(&r, &engine, &model_id);
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
/// finality certificate of a validator quorum, must carry this receipt's digest, worker and
/// model, and must not have been rejected.
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
            let s = crate::chain_cmd::get(&format!("{url}/v1/status"))?;
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
    let v = crate::chain_cmd::get(&format!("{url}/v1/proof/job/{job}"))?;
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
    let digest = deai_node::proto::receipt_digest(&r.to_bytes()?);
    out.push(match &j.receipt {
        None => check(
            "onchain_receipt",
            false,
            "no receipt posted for the job".into(),
        ),
        Some(rec) if rec.digest != digest => check(
            "onchain_receipt",
            false,
            format!(
                "the chain holds receipt digest {}, this receipt is {}",
                rec.digest.short(),
                digest.short()
            ),
        ),
        Some(rec) if rec.worker != r.worker_key => check(
            "onchain_receipt",
            false,
            "posted by another worker than the receipt's signer".into(),
        ),
        Some(_) if j.model != r.model_id => check(
            "onchain_receipt",
            false,
            "the job names another model".into(),
        ),
        Some(rec) => check(
            "onchain_receipt",
            true,
            format!(
                "digest {} posted by the signer at height {}",
                rec.digest.short(),
                rec.posted_at
            ),
        ),
    });
    use deai_ledger::state::JobStatus;
    let (ok, detail) = match j.status {
        JobStatus::Accepted => (true, format!("accepted and settled: {:?}", j.settlement)),
        JobStatus::Receipted | JobStatus::Challenged => {
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

#[derive(Args)]
pub struct ProofBench {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cases per tamper class (the target is 50 on the real model).
    #[arg(long, default_value_t = 10)]
    pub cases: usize,
    /// Tokens to generate per run.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// One JSON object per tamper class, then one summary object.
    #[arg(long)]
    pub json: bool,
}

const TOPICS: [&str; 10] = [
    "a robot who learns to paint",
    "the history of bread",
    "why the sky is blue",
    "a lighthouse keeper",
    "how bees make honey",
    "a city under the sea",
    "the first computer",
    "a dragon who fears fire",
    "learning to ride a bicycle",
    "the moon landing",
];

/// `deai bench proof`.
pub fn bench(b: ProofBench) -> Result<()> {
    use deai_engine::gguf::{requantize, WType};
    use deai_engine::{SamplingParams, StopReason};
    use deai_proof::tamper::reseal;
    use deai_proof::verify as check;
    use std::time::Instant;

    if b.cases == 0 || b.tokens == 0 {
        bail!("--cases and --tokens must be at least 1");
    }
    let path = crate::resolve_model(b.model.model.as_deref())?;
    let model_id = deai_models::sha256_file(&path)?;
    let threads = b
        .model
        .threads
        .unwrap_or_else(|| EngineConfig::default().threads);
    let engine_with = crate::engine_at;
    let verifier = engine_with(&path, threads, 0)?;
    // Honest workers: threads 1 / N, prefix cache off / on.
    let mut workers = vec![];
    for t in [1, threads.max(2)] {
        for prefix in [0, 64 << 20] {
            workers.push(engine_with(&path, t, prefix)?);
        }
    }
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let other_key = SigningKey::from_bytes(&[8u8; 32]);
    let tok = &verifier.model.tokenizer;
    let prompt = |i: usize| -> Result<Vec<u32>> {
        let text = format!(
            "<|im_start|>user\nWrite a story about {} (number {i}).<|im_end|>\n<|im_start|>assistant\n",
            TOPICS[i % TOPICS.len()]
        );
        Ok(tok.encode(&text, true)?)
    };
    let params = |i: usize| GenParams {
        max_tokens: b.tokens,
        sampling: if i.is_multiple_of(2) {
            SamplingParams::default()
        } else {
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                seed: i as u64,
                ..Default::default()
            }
        },
        stop: vec![],
    };
    let run_on =
        |e: &Engine, id: deai_types::Hash256, i: usize, k: &SigningKey| -> Result<(Receipt, f64)> {
            let p = prompt(i)?;
            let gp = params(i);
            let t0 = Instant::now();
            let g = e.generate(&p, &gp, |_| {})?;
            let gen_ms = t0.elapsed().as_secs_f64() * 1e3;
            let job = JobSpec {
                model_id: id,
                prompt_tokens: p,
                params: gp,
                nonce: [i as u8; 32],
            };
            let r = build_receipt(
                &job,
                &g,
                e.model.cfg.d_model,
                &e.profile(),
                ProofConfig::default(),
                k,
            )?;
            Ok((r, gen_ms))
        };

    // Honest side.
    let (mut honest, mut false_rejects) = (vec![], 0usize);
    let (mut gen_ms, mut verify_ms, mut proof_us, mut proof_bytes, mut out_tokens) =
        (0.0, 0.0, 0u64, 0usize, 0usize);
    for i in 0..b.cases {
        for (w, e) in workers.iter().enumerate() {
            let (r, ms) = run_on(e, model_id, i, &key)?;
            let t0 = Instant::now();
            let rep = check(&r, &verifier, &model_id);
            verify_ms += t0.elapsed().as_secs_f64() * 1e3;
            gen_ms += ms;
            proof_us += r.timings.proof_us;
            proof_bytes += r.proof.encoded_len();
            out_tokens += r.output_tokens.len();
            if !rep.accepted() {
                false_rejects += 1;
                eprintln!(
                    "false reject (case {i}, worker {w}): {:?}",
                    rep.first_failure()
                );
            }
            if w == 0 {
                honest.push(r);
            }
        }
    }
    let honest_runs = b.cases * workers.len();

    // Tamper matrix.
    // A tamper gets the case index, the attempt (see `truthful` below) and the honest receipt.
    type Tamper<'a> = Box<dyn Fn(usize, usize, &Receipt) -> Result<Receipt> + 'a>;
    let edit = |f: fn(&mut Receipt, usize), rebuild: bool| -> Tamper {
        let (v, k) = (&verifier, &key);
        Box::new(move |_, attempt, r: &Receipt| {
            let mut r = r.clone();
            f(&mut r, attempt);
            reseal(&mut r, rebuild.then_some(v), k).map_err(anyhow::Error::msg)?;
            Ok(r)
        })
    };
    let dir = tempfile_dir()?;
    let q8 = dir.join("requantized-q8_0.gguf");
    requantize(&path, &q8, WType::Q8_0)?;
    let cheap = engine_with(&q8, threads, 0)?;
    let _ = std::fs::remove_file(&q8);
    // The middle layer's feed-forward output matrix with 2 % noise (relative to its RMS).
    let noisy = dir.join("one-layer-noise.gguf");
    let layer = verifier.model.cfg.n_layer / 2;
    let tensor = format!("blk.{layer}.ffn_down.weight");
    deai_engine::gguf::perturb_tensor(&path, &noisy, &tensor, 0.02, 11)?;
    let perturbed = engine_with(&noisy, threads, 0)?;
    let _ = std::fs::remove_file(&noisy);
    let classes: Vec<(&str, Tamper)> = vec![
        (
            "different_weights",
            Box::new(|i, _, _: &Receipt| Ok(run_on(&cheap, model_id, i, &key)?.0)),
        ),
        (
            "one_layer_perturbed",
            Box::new(|i, _, _: &Receipt| Ok(run_on(&perturbed, model_id, i, &key)?.0)),
        ),
        (
            "system_prompt_token_changed",
            edit(
                |r, attempt| {
                    // Positions 4.. lie inside the system message of the chat template.
                    let j = (4 + attempt).min(r.prompt_tokens.len() - 1);
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                true,
            ),
        ),
        (
            "prompt_token_changed",
            edit(
                |r, attempt| {
                    let j = (r.prompt_tokens.len() / 2 + attempt) % r.prompt_tokens.len();
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                false,
            ),
        ),
        (
            "prompt_token_changed_rebuilt",
            edit(
                |r, attempt| {
                    let j = (r.prompt_tokens.len() / 2 + attempt) % r.prompt_tokens.len();
                    r.prompt_tokens[j] = other_token(r.prompt_tokens[j]);
                },
                true,
            ),
        ),
        (
            "output_token_replaced",
            edit(
                |r, _| {
                    let j = r.output_tokens.len() / 2;
                    r.output_tokens[j] = other_token(r.output_tokens[j]);
                },
                true,
            ),
        ),
        (
            "output_truncated",
            edit(
                |r, _| {
                    let n = r.output_tokens.len();
                    r.output_tokens.truncate((n / 2).max(1));
                },
                true,
            ),
        ),
        (
            "output_extended",
            edit(|r, _| r.output_tokens.push(100), true),
        ),
        (
            "temperature_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = if r.sampling.temperature == 0.0 {
                        0.9
                    } else {
                        0.0
                    }
                },
                true,
            ),
        ),
        (
            "top_p_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = r.sampling.temperature.max(0.8);
                    r.sampling.top_p = 0.3;
                },
                true,
            ),
        ),
        (
            "seed_changed",
            edit(
                |r, _| {
                    r.sampling.temperature = r.sampling.temperature.max(0.8);
                    r.sampling.seed ^= 0x5eed;
                },
                true,
            ),
        ),
        (
            "stop_reason_falsified",
            edit(
                |r, _| {
                    r.stop_reason = if r.stop_reason == StopReason::Eos {
                        StopReason::MaxTokens
                    } else {
                        StopReason::Eos
                    }
                },
                false,
            ),
        ),
        (
            "signature_forged",
            Box::new(|_, _, r: &Receipt| {
                let mut r = r.clone();
                r.signature[7] ^= 0x40;
                Ok(r)
            }),
        ),
        (
            "key_swapped",
            Box::new(|_, _, r: &Receipt| {
                let mut r = r.clone();
                r.worker_key = other_key.verifying_key().to_bytes();
                Ok(r)
            }),
        ),
        (
            "proof_replayed",
            Box::new(|i, _, r: &Receipt| {
                let donor = run_on(&verifier, model_id, i + 1001, &key)?.0;
                let mut r = r.clone();
                r.proof = donor.proof.clone();
                if r.proof.chunks.len() != donor.proof.chunks.len()
                    || r.output_tokens.len() != donor.output_tokens.len()
                {
                    r.output_tokens = donor.output_tokens.clone();
                    r.output_commitment = deai_proof::receipt::output_commitment(&r.output_tokens);
                }
                r.sign(&key)?;
                Ok(r)
            }),
        ),
    ];
    // A tampered receipt whose every claim is true (an honest run on its claimed model,
    // prompt and sampling gives exactly its output and stop reason: e.g. a changed prompt
    // token that does not change the answer) is not a tamper: such a case is redrawn with
    // the next attempt (another token position) and counted as `redrawn`.
    let truthful = |t: &Receipt| -> Result<bool> {
        if t.model_id != model_id {
            return Ok(false);
        }
        let g = verifier.generate(&t.prompt_tokens, &t.gen_params(), |_| {})?;
        Ok(g.output_tokens == t.output_tokens && g.stop_reason == t.stop_reason)
    };
    const ATTEMPTS: usize = 8;
    let mut rows = vec![];
    for (name, f) in &classes {
        let (mut detected, mut redrawn) = (0, 0);
        for (i, r) in honest.iter().enumerate() {
            let mut t = f(i, 0, r)?;
            let mut rep = check(&t, &verifier, &model_id);
            // Only the prompt-token classes vary with the attempt.
            let tries = if name.contains("prompt_token") {
                ATTEMPTS
            } else {
                1
            };
            for attempt in 1..tries {
                if !(rep.accepted() && truthful(&t)?) {
                    break;
                }
                redrawn += 1;
                t = f(i, attempt, r)?;
                rep = check(&t, &verifier, &model_id);
            }
            // Detection must come from a content check unless the class is about signatures.
            let sig_class = name.starts_with("signature") || name.starts_with("key");
            let content = rep
                .checks
                .iter()
                .any(|c| !c.ok && c.name != "signature" && c.name != "encoding");
            if !rep.accepted() && (sig_class || content) {
                detected += 1;
            }
        }
        rows.push((name.to_string(), honest.len(), detected, redrawn));
    }
    let _ = std::fs::remove_dir(&dir);

    let bpt = proof_bytes as f64 / out_tokens.max(1) as f64;
    let overhead = proof_us as f64 / 1e3 / gen_ms.max(1e-9) * 100.0;
    let (vm, gm) = (verify_ms / honest_runs as f64, gen_ms / honest_runs as f64);
    if b.json {
        for (class, cases, detected, redrawn) in &rows {
            println!(
                "{}",
                serde_json::json!({"class": class, "cases": cases, "detected": detected,
                                   "redrawn": redrawn})
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "honest_runs": honest_runs,
                "false_rejects": false_rejects,
                "proof_bytes_per_token": bpt,
                "proof_overhead_pct": overhead,
                "verify_ms": vm,
                "generate_ms": gm,
                "verify_over_generate": vm / gm.max(1e-9),
            })
        );
    } else {
        println!(
            "{:<30} {:>6} {:>9} {:>8}",
            "tamper class", "cases", "detected", "redrawn"
        );
        for (class, cases, detected, redrawn) in &rows {
            println!("{class:<30} {cases:>6} {detected:>9} {redrawn:>8}");
        }
        println!("(redrawn: tampers whose claims all turned out true, replaced by another try)");
        println!("honest runs {honest_runs}, false rejects {false_rejects}");
        println!("proof {bpt:.2} bytes/token, generation overhead {overhead:.3} %");
        println!(
            "verify {vm:.1} ms vs generate {gm:.1} ms per run: {:.3}x",
            vm / gm.max(1e-9)
        );
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = deai_models::default_home()
        .join("tmp")
        .join(format!("bench-proof-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// A different token id that stays inside any vocabulary larger than 4.
fn other_token(t: u32) -> u32 {
    if t > 3 {
        t - 1
    } else {
        t + 1
    }
}
