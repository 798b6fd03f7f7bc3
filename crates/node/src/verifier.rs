//! The validator's verification duty: pick receipts to check at the governance sample rate
//! (and every challenged one), fetch each from the worker's pointer, check it against what
//! is on chain, re-run it with the proof crate (one prefill), and post a verdict.
//!
//! Which receipts are sampled, and by whom, the chain decides from its beacon
//! (`deai_ledger::state::beacon`): a sampled job names its committee, and this validator
//! judges the ones it is on (sealing its verdict with a proof of verification keyed by the
//! round's value, `VerdictCommit`, and revealing it once every member has committed), plus
//! every challenged (or escalated) job, sealed the same way with the proof itself (the
//! committee seals only its tag, `state::pov_tag`) and opened once the chain opens the
//! reveals. On a chain without a beacon key every validator samples from the digest of the
//! block that finalized the receipt (known to its proposer: the weaker, older rule), votes
//! plainly, and a quorum decides.
//!
//! **Capability challenge.** A newly registered worker gets no client jobs (gateways route
//! only to workers with an accepted job) until it answers a challenge: one validator,
//! picked by the worker's address, pays for a job on a prompt with a random code in it, gives
//! the worker a deadline, and verifies the receipt itself. The job then goes through the
//! ledger like any other (verified by the quorum, settled, counted in `jobs_done`); a failed
//! challenge is also challenged on chain, so the quorum rejects it and slashes the worker
//! even where the sample rate would skip it.

use crate::proto::{RunEvent, RunRequest};
use crate::worker_client::WorkerClient;
use deai_client::{Signer, WorkerEntry};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::Engine;
use deai_engine::GenParams;
use deai_ledger::state::{Job, JobStatus, BPS};
use deai_ledger::Address;
use deai_ledger::TxKind;
use deai_proof::Receipt;
use deai_types::Hash256;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The outcome of trying to check one receipt.
#[derive(Clone, Debug)]
pub enum Check {
    Done(Finding),
    /// The receipt could not be fetched (worker down or restarting).
    Unavailable(String),
}

/// What one verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub job: Hash256,
    pub accept: bool,
    /// The proof of verification (`deai_proof::pov_digest`), when the check was keyed by
    /// the job's beacon value and the prefill ran.
    pub pov: Option<Hash256>,
    /// The first failed check, when rejected.
    pub reason: Option<String>,
}

/// How many jobs of each status (challenged, receipted) one [`Verifier::tick`] looks at.
pub const SCAN: usize = 1_000;
/// How many receipts one [`Verifier::tick`] checks at once.
pub const IN_FLIGHT: usize = 4;

pub struct Verifier {
    signer: Arc<Signer>,
    engine: Arc<Engine>,
    model_id: Hash256,
    done: Mutex<HashSet<Hash256>>,
    /// Every verdict this validator gave, newest last (for status pages and tests).
    pub findings: Mutex<Vec<Finding>>,
    /// Capability challenges this validator ran: worker -> passed (None while running).
    pub probes: Mutex<HashMap<Address, Option<bool>>>,
    /// Longest a re-execution waits for generation on a shared engine (see
    /// [`Verifier::with_patience`]).
    patience_ms: std::sync::atomic::AtomicU64,
    /// First (time, height) this verifier saw: the observed block time.
    clock: crate::BlockClock,
    /// One re-execution on the engine at a time (fetches and checks around it overlap).
    prefill: tokio::sync::Mutex<()>,
    /// Whether the chain has a beacon key (fixed at genesis), once known.
    beacon: std::sync::OnceLock<bool>,
    /// This validator's sealed committee verdicts, until they are revealed on chain.
    sealed: Mutex<HashMap<Hash256, Sealed>>,
    /// Its sealed verdicts on challenged (or escalated) jobs outside their committee, until
    /// the job settles.
    quorum: Mutex<HashMap<Hash256, QuorumSeal>>,
}

/// A verdict this validator sealed on a challenged job outside its committee.
#[derive(Clone, Copy, Debug)]
struct QuorumSeal {
    accept: bool,
    /// The proof of verification itself (the chain tags it).
    pov: Hash256,
    /// Its last submission: (whether it was the reveal, when). Neither is sent again
    /// before [`RESEND`] (a refused or lost one is, after).
    sent: (bool, std::time::Instant),
}

/// A committee verdict this validator committed to.
#[derive(Clone, Copy, Debug)]
struct Sealed {
    accept: bool,
    /// The proof of verification itself: the committee sees only its tag
    /// (`state::pov_tag`), so that a validator judging the job after an escalation must
    /// reveal a proof it computed.
    pov: Hash256,
    /// When its commitment, and its reveal, were last submitted.
    committed: std::time::Instant,
    revealed: Option<std::time::Instant>,
    /// When its job was last seen drawn (sampled, with this validator on its committee).
    drawn: std::time::Instant,
}

/// How long a committee transaction may stay unfinalized before it is submitted again.
const RESEND: Duration = Duration::from_secs(10);

/// How long a sealed verdict is kept once its job is no longer drawn (it escalated, or
/// settled): an escalated job takes it as this validator's verdict (opened, or plain when
/// the commitment never landed).
const KEEP_SEALED: Duration = Duration::from_secs(600);

/// Default cap on how long a verification yields to generation on the same engine.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// How long a worker has to answer its capability challenge.
pub const CHALLENGE_DEADLINE: Duration = Duration::from_secs(60);
/// Blocks each validator in turn is the designated challenger of a still-unqualified worker
/// (the duty rotates, so an offline validator delays a worker by one slot at most).
const CHALLENGE_SLOT_BLOCKS: u64 = 1_000;
/// A designated challenger starts only in the first half of its slot, so that its job is on
/// chain (in flight) long before the next one's slot begins (devnet blocks can be a few ms).
const CHALLENGE_SLOT_GUARD: u64 = CHALLENGE_SLOT_BLOCKS / 2;
/// Tokens a capability challenge asks for.
const CHALLENGE_TOKENS: usize = 16;

/// True when the receipt of `job`, finalized in the block with digest `block`, falls in the
/// sample at `rate_bps`.
pub fn sampled(job: &Hash256, block: &Hash256, rate_bps: u64) -> bool {
    let h = Hash256::digest_parts("deai-sample-v1", &[job.as_bytes(), block.as_bytes()]);
    let x = u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes"));
    x % BPS < rate_bps
}

/// The proof of verification a sealed verdict carries: the finding's, or none (the zero
/// value) for a rejection without one; `None` for an acceptance without one (the prefill did
/// not run): it is judged again on the next pass.
fn sealable_pov(f: &Finding) -> Option<Hash256> {
    match f.pov {
        Some(p) => Some(p),
        None if f.accept => None,
        None => Some(Hash256::default()),
    }
}

/// The (vote, proof) that opens this validator's commitment on chain (`opens`): the sealed
/// verdict, or, re-executed after a restart, the likely ones.
fn reopen(
    f: &Finding,
    pov: Hash256,
    opens: impl Fn(bool, &Hash256) -> bool,
) -> Option<(bool, Hash256)> {
    [
        (f.accept, pov),
        (!f.accept, pov),
        (false, Hash256::default()),
    ]
    .into_iter()
    .find(|(a, p)| opens(*a, p))
}

/// Whether this validator (`me`) judges `job` by a sealed verdict outside its committee: a
/// challenged (or escalated) job on a chain with a beacon that `me` was not drawn for (a
/// member opens its committee commitment instead, or, if it never made one, has no say).
fn quorum_phase(beacon: bool, job: &Job, me: &Address) -> bool {
    beacon && job.status == JobStatus::Challenged && !job.committee.contains(me)
}

/// How long a re-execution may yield: half the `blocks_left` before its deadline at the
/// block time observed over `elapsed` and `blocks_seen` blocks, at most `cap`, and nothing
/// before any block time was observed.
fn yield_budget(elapsed: Duration, blocks_seen: u64, blocks_left: u64, cap: Duration) -> Duration {
    if blocks_seen == 0 {
        return Duration::ZERO;
    }
    let block = elapsed / blocks_seen.min(u32::MAX as u64) as u32;
    let half = (blocks_left / 2).min(u32::MAX as u64) as u32;
    block.saturating_mul(half).min(cap)
}

impl Verifier {
    /// `signer` may be shared with the node's other duties under the same key (one nonce
    /// sequence per account).
    pub fn new(signer: impl Into<Arc<Signer>>, engine: Arc<Engine>, model_id: Hash256) -> Self {
        Verifier {
            signer: signer.into(),
            engine,
            model_id,
            done: Mutex::new(HashSet::new()),
            findings: Mutex::new(Vec::new()),
            probes: Mutex::new(HashMap::new()),
            patience_ms: (DEFAULT_PATIENCE.as_millis() as u64).into(),
            clock: Default::default(),
            prefill: tokio::sync::Mutex::new(()),
            beacon: std::sync::OnceLock::new(),
            sealed: Mutex::new(HashMap::new()),
            quorum: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the chain samples receipts with its beacon (then only committees and, after a
    /// challenge or escalation, every validator judge them).
    async fn has_beacon(&self) -> anyhow::Result<bool> {
        if let Some(b) = self.beacon.get() {
            return Ok(*b);
        }
        let b = self.signer.ledger().beacon().await?.is_some();
        Ok(*self.beacon.get_or_init(|| b))
    }

    /// This validator's salt for its commitment on `job` (`state::verdict_salt`).
    fn salt(&self, job: &Hash256) -> Hash256 {
        deai_ledger::state::verdict_salt(&self.signer.key().to_bytes(), job)
    }

    /// This validator's commitment to `accept` and `pov` on `job` (the proof itself: the
    /// sealed verdict of a judge outside the committee).
    fn commitment(&self, job: &Hash256, accept: bool, pov: &Hash256) -> Hash256 {
        let me = self.signer.address();
        deai_ledger::state::verdict_commitment(&me, job, accept, pov, &self.salt(job))
    }

    /// A committee member's commitment: to the tag of its proof.
    fn committee_commitment(&self, job: &Hash256, accept: bool, pov: &Hash256) -> Hash256 {
        self.commitment(job, accept, &deai_ledger::state::pov_tag(pov))
    }

    fn seal(&self, id: Hash256, accept: bool, pov: Hash256) {
        self.sealed.lock().unwrap().insert(
            id,
            Sealed {
                accept,
                pov,
                committed: std::time::Instant::now(),
                revealed: None,
                drawn: std::time::Instant::now(),
            },
        );
    }

    /// Resubmits a sealed commitment still not on chain after [`RESEND`], or reveals a
    /// sealed verdict once every member of its committee has committed (again after
    /// [`RESEND`] until the reveal is on chain). Returns whether it submitted anything.
    async fn advance_sealed(&self, id: &Hash256, job: &Job) -> bool {
        let me = self.signer.address();
        let on_chain = job
            .commits
            .iter()
            .find(|c| c.voter == me)
            .map(|c| c.commitment);
        let Some(s) = self.sealed.lock().unwrap().get(id).copied() else {
            return false; // not judged yet: the check pass seals it
        };
        if job.povs.iter().any(|p| p.voter == me) {
            return false; // revealed
        }
        let (kind, what) = match on_chain {
            None if s.committed.elapsed() < RESEND => return false,
            None => {
                let commitment = self.committee_commitment(id, s.accept, &s.pov);
                (
                    TxKind::VerdictCommit {
                        job: *id,
                        commitment,
                    },
                    "commitment",
                )
            }
            Some(_) if job.commits.len() < job.committee.len() => return false,
            Some(_) if s.revealed.is_some_and(|t| t.elapsed() < RESEND) => return false,
            Some(_) => (
                TxKind::VerdictReveal {
                    job: *id,
                    accept: s.accept,
                    pov: deai_ledger::state::pov_tag(&s.pov),
                    salt: self.salt(id),
                },
                "reveal",
            ),
        };
        match self.signer.submit(kind).await {
            Ok(_) => {
                let now = std::time::Instant::now();
                if let Some(e) = self.sealed.lock().unwrap().get_mut(id) {
                    if on_chain.is_some() {
                        e.revealed = Some(now);
                    } else {
                        e.committed = now;
                    }
                }
                tracing::info!(job = %id, accept = s.accept, "committee {what} submitted");
                true
            }
            Err(e) => {
                tracing::warn!(job = %id, "committee {what} not submitted: {e:#}");
                false
            }
        }
    }

    /// One pass of the committee loop: moves every sealed verdict of this validator one
    /// step on (commitment resent, reveal), and forgets those of jobs no longer drawn.
    /// It runs apart from the checks, so a reveal never waits behind re-executions: a
    /// member that committed must reveal within the verdict window or be slashed.
    pub async fn committee_pass(&self) -> anyhow::Result<usize> {
        let me = self.signer.address();
        let drawn = self.signer.ledger().jobs_drawn(&me, SCAN).await?;
        {
            let live: HashSet<Hash256> = drawn.iter().map(|(id, _)| *id).collect();
            // A verdict sealed a moment ago may belong to a job this listing predates, and
            // one of an escalated job is still this validator's verdict on it.
            let now = std::time::Instant::now();
            self.sealed.lock().unwrap().retain(|id, s| {
                if live.contains(id) {
                    s.drawn = now;
                }
                s.drawn.elapsed() < KEEP_SEALED
            });
        }
        let mut sent = 0;
        for (id, job) in &drawn {
            if self.advance_sealed(id, job).await {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Re-executions run as background work on the engine (`Engine::prefill_all_background`):
    /// when this validator shares its engine with a worker, each chunk of the prefill waits
    /// while a client's generation runs, for at most `cap` per receipt and never more than
    /// half of the blocks left before the job's verdict deadline at the block time observed
    /// so far (none until two heights were seen). `Duration::ZERO` never waits.
    pub fn with_patience(self, cap: Duration) -> Self {
        self.set_patience(cap);
        self
    }

    /// The cap of [`Verifier::with_patience`].
    pub fn patience(&self) -> Duration {
        Duration::from_millis(self.patience_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Changes the cap of [`Verifier::with_patience`] for the receipts checked from now on.
    pub fn set_patience(&self, cap: Duration) {
        let ms = cap.as_millis().min(u64::MAX as u128) as u64;
        self.patience_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the re-execution of a job due at `deadline` may yield at `height`.
    fn patience_for(&self, height: u64, deadline: u64) -> Duration {
        let (elapsed, blocks) = self.clock.observe(height);
        yield_budget(
            elapsed,
            blocks,
            deadline.saturating_sub(height),
            self.patience(),
        )
    }

    /// Starts a capability challenge for each new worker of this model that this validator
    /// is the designated challenger of.
    pub async fn challenge_new_workers(self: &Arc<Self>) -> anyhow::Result<()> {
        let ledger = self.signer.ledger();
        let me = hex::encode(self.signer.address());
        let status = ledger.status().await?;
        let height = status["height"].as_u64().unwrap_or(0);
        let mut vals: Vec<String> = status["validators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["address"].as_str().map(str::to_string))
            .collect();
        vals.sort();
        if vals.is_empty() {
            return Ok(());
        }
        for w in ledger.workers().await? {
            let fresh = w.worker.active && w.worker.jobs_done == 0;
            if !fresh || !w.worker.models.contains(&self.model_id) {
                continue;
            }
            // Exactly one designated challenger at any height: the duty rotates every
            // `CHALLENGE_SLOT_BLOCKS` after registration, starting from a validator picked by
            // the worker's address. One challenge at a time: none while a job of the worker
            // is in flight (the previous designee's).
            let pick = Hash256::digest_parts("deai-challenger-v1", &[&w.address]).0[0] as usize;
            let age = height.saturating_sub(w.worker.registered_at);
            let slot = (age / CHALLENGE_SLOT_BLOCKS) as usize;
            if vals[(pick + slot) % vals.len()] != me
                || age % CHALLENGE_SLOT_BLOCKS >= CHALLENGE_SLOT_BLOCKS - CHALLENGE_SLOT_GUARD
            {
                continue;
            }
            if self.probes.lock().unwrap().contains_key(&w.address) {
                continue;
            }
            if ledger.has_jobs_in_flight(&w.address).await? {
                continue;
            }
            self.probes.lock().unwrap().insert(w.address, None);
            let v = self.clone();
            tokio::spawn(async move {
                let passed = match v.run_challenge(&w).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(worker = %hex::encode(&w.address[..6]), "capability challenge: {e:#}");
                        false
                    }
                };
                tracing::info!(worker = %hex::encode(&w.address[..6]), passed, "capability challenge");
                v.probes.lock().unwrap().insert(w.address, Some(passed));
            });
        }
        Ok(())
    }

    /// One capability challenge; true when the worker answered in time with a receipt that
    /// verifies. A bad receipt is also challenged on chain.
    async fn run_challenge(&self, w: &WorkerEntry) -> anyhow::Result<bool> {
        let nonce = deai_proof::random_nonce();
        let code = hex::encode(&nonce[..4]);
        let msgs = [ChatMessage {
            role: "user".into(),
            content: format!("Repeat the code {code}, then count from one to five."),
        }];
        let prompt_tokens = self
            .engine
            .model
            .tokenizer
            .encode(&chat_prompt(&msgs, true), true)?;
        let params = GenParams {
            max_tokens: CHALLENGE_TOKENS,
            ..GenParams::default()
        };
        let spec = deai_proof::JobSpec {
            model_id: self.model_id,
            prompt_tokens: prompt_tokens.clone(),
            params: params.clone(),
            nonce,
        };
        let job = Hash256(spec.id());
        let escrow = deai_ledger::job_cost(
            (prompt_tokens.len() + CHALLENGE_TOKENS) as u64,
            w.worker.price_per_1k,
        );
        let open_job = self
            .signer
            .sign(TxKind::OpenJob {
                job,
                model: self.model_id,
                max_tokens: CHALLENGE_TOKENS as u32,
                escrow,
                worker: Some(w.address),
                app: None,
                client: None,
            })
            .await?;
        let _ = self.signer.ledger().submit(&open_job).await;
        let req = RunRequest {
            model_id: self.model_id,
            prompt_tokens,
            params,
            nonce,
            open_job,
            top_logprobs: None,
        };
        let worker = WorkerClient::new(&w.worker.endpoint, CHALLENGE_DEADLINE, CHALLENGE_DEADLINE);
        let answer = async { worker.run(&req).await?.remaining_events().await };
        let events = match tokio::time::timeout(CHALLENGE_DEADLINE, answer).await {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => anyhow::bail!("no answer: {e:#}"),
            Err(_) => anyhow::bail!("no answer within {CHALLENGE_DEADLINE:?}"),
        };
        let receipt = events
            .into_iter()
            .find_map(|ev| match ev {
                RunEvent::Done { receipt, .. } => Some(receipt),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("the answer has no receipt"))?;
        let r = Receipt::from_json(&receipt.to_string()).map_err(|e| anyhow::anyhow!(e))?;
        let engine = self.engine.clone();
        let model_id = self.model_id;
        let same_job = r.job_id == job.0 && r.worker_key == w.address;
        let report =
            tokio::task::spawn_blocking(move || deai_proof::verify(&r, &engine, &model_id)).await?;
        let passed = same_job && report.accepted();
        if !passed {
            // Make the quorum look at it whatever the sample rate: challenge it on chain once
            // the worker's receipt is there.
            let ledger = self.signer.ledger();
            let t0 = tokio::time::Instant::now();
            while t0.elapsed() < CHALLENGE_DEADLINE {
                match ledger.job(&job).await? {
                    Some(j) if j.status == JobStatus::Receipted => {
                        self.signer.submit(TxKind::Challenge { job }).await?;
                        break;
                    }
                    // Its committee re-executes it already (this validator, the job's
                    // client, is never on it).
                    Some(j) if j.status == JobStatus::Sampled => break,
                    Some(j) if j.status.is_final() => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(passed)
    }

    /// Checks once for receipts to verify; returns what it verified.
    ///
    /// First it sorts out what is due: challenged jobs, then receipted ones by nearest
    /// deadline (up to [`SCAN`] of each), dropping the ones already judged, of another model
    /// or not sampled, so that unsampled receipts never crowd sampled ones out. Then it checks
    /// the rest, [`IN_FLIGHT`] at a time (fetching receipts concurrently; the engine runs
    /// the prefills one after another), nearest deadline first.
    pub async fn tick(&self) -> anyhow::Result<Vec<Finding>> {
        let ledger = self.signer.ledger();
        let params = ledger.params().await?;
        let height = ledger.height().await?;
        let me = self.signer.address();
        let mut due: Vec<(Hash256, Job)> = ledger.jobs_due("challenged", SCAN).await?;
        // Sealed verdicts last sent long ago belong to jobs settled since (a listing cut at
        // SCAN is no proof that a job left it: a sealed one may just be further down).
        self.quorum
            .lock()
            .unwrap()
            .retain(|_, q| q.sent.1.elapsed() < KEEP_SEALED);
        due.extend(ledger.jobs_drawn(&me, SCAN).await?);
        let beacon = self.has_beacon().await?;
        if !beacon {
            due.extend(ledger.jobs_due("receipted", SCAN).await?);
        }
        let mut todo = Vec::new();
        for (id, job) in due {
            if self.done.lock().unwrap().contains(&id) || job.verdicts.iter().any(|v| v.voter == me)
            {
                continue;
            }
            let Some(rec) = &job.receipt else { continue };
            if job.model != self.model_id {
                continue; // another model: validators with that model check it
            }
            // A committee member seals (commits) here, and the committee loop reveals once
            // every member has: only a job it has not sealed yet is judged now (after a
            // restart, one it committed to is judged again to recover the opening).
            let member = job.committee.contains(&me);
            let judge_now = !self.sealed.lock().unwrap().contains_key(&id);
            // On a chain with a beacon every judge of a challenged job outside its
            // committee seals its verdict first, and opens it once the reveals are open.
            let silent_member = beacon
                && job.status == JobStatus::Challenged
                && member
                && !job.commits.iter().any(|c| c.voter == me);
            if silent_member {
                // Drawn, but its commitment never landed: the chain takes no other verdict
                // from it on this job.
                self.done.lock().unwrap().insert(id);
                continue;
            }
            if quorum_phase(beacon, &job, &me) {
                if job.worker == Some(me) {
                    // A job's worker does not judge it.
                    self.done.lock().unwrap().insert(id);
                    continue;
                }
                let committed = job.quorum_commits.iter().any(|c| c.voter == me);
                match (committed, job.reveals_open) {
                    (true, false) => continue, // sealed: wait for the reveals
                    (false, true) => {
                        // Too late to judge it: the commitments are closed.
                        self.done.lock().unwrap().insert(id);
                        continue;
                    }
                    _ => {}
                }
                // Its commitment (or reveal) is on its way: not again before RESEND.
                let pending = self
                    .quorum
                    .lock()
                    .unwrap()
                    .get(&id)
                    .is_some_and(|q| q.sent.0 == committed && q.sent.1.elapsed() < RESEND);
                if pending {
                    continue;
                }
            }
            match job.status {
                // The beacon drew its committee: only members judge it (it comes back as
                // challenged if they disagree or miss the deadline).
                JobStatus::Sampled if !member || !judge_now => continue,
                // A chain without a beacon: every validator samples from the block digest.
                JobStatus::Receipted => {
                    let Some(block) = ledger.block_digest(rec.posted_at).await? else {
                        continue;
                    };
                    if !sampled(&id, &block, params.sample_rate_bps) {
                        self.done.lock().unwrap().insert(id);
                        continue;
                    }
                }
                _ => {}
            }
            todo.push((id, job));
        }
        use futures::StreamExt;
        let checks = futures::stream::iter(todo.into_iter().map(|(id, job)| async move {
            // A verdict this validator already sealed is its verdict: sealed outside the
            // committee (resent, or opened now the reveals are open), or on the committee of
            // a job since escalated (re-executing again would only add to the backlog that
            // may have caused the escalation). Neither needs the key.
            let quorum_seal = self
                .quorum
                .lock()
                .unwrap()
                .get(&id)
                .map(|q| (q.accept, q.pov, "as judged when sealed"));
            let committee_seal = (job.status == JobStatus::Challenged)
                .then(|| self.sealed.lock().unwrap().get(&id).copied())
                .flatten()
                .map(|s| (s.accept, s.pov, "as judged on the committee"));
            if let Some((accept, pov, why)) = quorum_seal.or(committee_seal) {
                let finding = Finding {
                    job: id,
                    accept,
                    pov: Some(pov),
                    reason: (!accept).then(|| why.to_string()),
                };
                return (id, job, Some(Check::Done(finding)));
            }
            let patience = self.patience_for(height, job.deadline);
            // A committee member proves its re-execution with a digest keyed by the value
            // of the job's beacon round.
            // So does a member that committed on a job since escalated (it must open its
            // commitment: the chain refuses it a plain verdict).
            // So does every judge of a challenged job on a chain with a beacon.
            let sealed_phase = job.status == JobStatus::Sampled
                || job.commits.iter().any(|c| c.voter == me)
                || quorum_phase(beacon, &job, &me);
            let value = match (
                sealed_phase && job.sampled_at.is_some(),
                job.receipt.as_ref().and_then(|r| r.beacon_round),
            ) {
                (true, Some(round)) => self
                    .signer
                    .ledger()
                    .beacon_value(round)
                    .await
                    .ok()
                    .flatten(),
                _ => None,
            };
            let key = if sealed_phase {
                deai_ledger::state::pov_key(&job, value)
            } else {
                None
            };
            if sealed_phase && key.is_none() {
                // No proof without the key: try again on the next pass.
                return (id, job, None);
            }
            let check = self.check_yielding(&id, &job, patience, key).await;
            (id, job, Some(check))
        }))
        .buffered(IN_FLIGHT);
        futures::pin_mut!(checks);
        let mut out = Vec::new();
        while let Some((id, job, check)) = checks.next().await {
            let Some(check) = check else { continue };
            let posted_at = job.receipt.as_ref().map_or(0, |r| r.posted_at);
            let finding = match check {
                Check::Done(f) => f,
                Check::Unavailable(why) => {
                    // The worker may be restarting: ask again later, and reject only once
                    // half of the current phase (the challenge window of a receipt, the
                    // verdict window of a sampled or challenged job) has passed without it.
                    let until = match job.status {
                        JobStatus::Receipted => {
                            posted_at.saturating_add(params.challenge_window / 2)
                        }
                        _ => job.deadline.saturating_sub(params.verdict_window / 2),
                    };
                    if height < until {
                        tracing::debug!(job = %id, "receipt not available yet: {why}");
                        continue;
                    }
                    Finding {
                        job: id,
                        accept: false,
                        pov: None,
                        reason: Some(why),
                    }
                }
            };
            // A committee member seals its verdict and proof first (the committee loop
            // reveals it once every member has committed); a member whose job escalated
            // after it committed opens its commitment; anyone else posts a plain verdict.
            let sampled_job = job.status == JobStatus::Sampled;
            let my_commit = job
                .commits
                .iter()
                .find(|c| c.voter == me)
                .map(|c| c.commitment);
            let quorum = quorum_phase(beacon, &job, &me);
            let my_quorum_commit = job
                .quorum_commits
                .iter()
                .find(|c| c.voter == me)
                .map(|c| c.commitment);
            let kind = if quorum {
                let Some(pov) = sealable_pov(&finding) else {
                    continue;
                };
                match my_quorum_commit {
                    Some(c) => {
                        let Some((accept, pov)) =
                            reopen(&finding, pov, |a, p| self.commitment(&id, a, p) == c)
                        else {
                            tracing::warn!(job = %id, "cannot reopen this validator's commitment");
                            continue;
                        };
                        self.quorum.lock().unwrap().insert(
                            id,
                            QuorumSeal {
                                accept,
                                pov,
                                sent: (true, std::time::Instant::now()),
                            },
                        );
                        TxKind::VerdictReveal {
                            job: id,
                            accept,
                            pov,
                            salt: self.salt(&id),
                        }
                    }
                    None => {
                        self.quorum.lock().unwrap().insert(
                            id,
                            QuorumSeal {
                                accept: finding.accept,
                                pov,
                                sent: (false, std::time::Instant::now()),
                            },
                        );
                        TxKind::VerdictCommit {
                            job: id,
                            commitment: self.commitment(&id, finding.accept, &pov),
                        }
                    }
                }
            } else if sampled_job || my_commit.is_some() {
                let Some(pov) = sealable_pov(&finding) else {
                    continue;
                };
                match my_commit {
                    Some(c) => {
                        let Some((accept, pov)) = reopen(&finding, pov, |a, p| {
                            self.committee_commitment(&id, a, p) == c
                        }) else {
                            tracing::warn!(job = %id, "cannot reopen this validator's commitment");
                            continue;
                        };
                        self.seal(id, accept, pov);
                        if sampled_job {
                            continue; // the committee loop reveals it
                        }
                        TxKind::VerdictReveal {
                            job: id,
                            accept,
                            pov: deai_ledger::state::pov_tag(&pov),
                            salt: self.salt(&id),
                        }
                    }
                    None => {
                        self.seal(id, finding.accept, pov);
                        TxKind::VerdictCommit {
                            job: id,
                            commitment: self.committee_commitment(&id, finding.accept, &pov),
                        }
                    }
                }
            } else {
                TxKind::Verdict {
                    job: id,
                    accept: finding.accept,
                }
            };
            match self.signer.submit(kind).await {
                Ok(_) => {
                    // Judged (a committee member's commitment is only sealed: it is
                    // revealed by the committee loop): a refused submission is tried again
                    // on the next pass (a committee member that misses its deadline is
                    // slashed). A sealed verdict outside the committee is sent again after
                    // RESEND until its commitment, then its reveal, is on chain.
                    if !sampled_job && !quorum {
                        self.done.lock().unwrap().insert(id);
                    }
                    tracing::info!(job = %id, accept = finding.accept, reason = ?finding.reason, "verdict")
                }
                Err(e) => tracing::warn!(job = %id, "verdict not submitted: {e:#}"),
            }
            if quorum && my_quorum_commit.is_some() {
                continue; // its finding was recorded when it was sealed
            }
            self.findings.lock().unwrap().push(finding.clone());
            out.push(finding);
        }
        Ok(out)
    }

    /// Runs until the process ends, checking every `every`.
    /// The committee loop ([`Verifier::committee_pass`]) runs beside the checks, in the
    /// same task.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let committee = async {
            loop {
                if let Err(e) = self.committee_pass().await {
                    tracing::debug!("committee pass: {e:#}");
                }
                tokio::time::sleep(every).await;
            }
        };
        let checks = async {
            loop {
                if let Err(e) = self.challenge_new_workers().await {
                    tracing::debug!("capability challenges: {e:#}");
                }
                if let Err(e) = self.tick().await {
                    tracing::debug!("verifier: {e:#}");
                }
                tokio::time::sleep(every).await;
            }
        };
        futures::future::join(committee, checks).await;
    }

    /// Fetches and checks the receipt of `job`. Any failure to produce a matching, valid
    /// receipt is a reject; a receipt that cannot be fetched is reported as such (the caller
    /// retries for a while before rejecting).
    pub async fn check(&self, id: &Hash256, job: &Job) -> Check {
        self.check_yielding(id, job, Duration::ZERO, None).await
    }

    /// [`Verifier::check`] with the prefill run as background work that yields to generation
    /// on this engine for up to `patience`.
    async fn check_yielding(
        &self,
        id: &Hash256,
        job: &Job,
        patience: Duration,
        pov_key: Option<Hash256>,
    ) -> Check {
        let reject = |reason: String| {
            Check::Done(Finding {
                job: *id,
                accept: false,
                pov: None,
                reason: Some(reason),
            })
        };
        let Some(rec) = &job.receipt else {
            return reject("no receipt posted".into());
        };
        let text = match self.fetch(&rec.pointer).await {
            Ok(t) => t,
            Err(e) => {
                return Check::Unavailable(format!("receipt unavailable at {}: {e:#}", rec.pointer))
            }
        };
        let r = match Receipt::from_json(&text) {
            Ok(r) => r,
            Err(e) => return reject(format!("receipt does not decode: {e}")),
        };
        if let Err(m) = crate::onchain::receipt_matches_job(&r, id, job) {
            return reject(m.to_string());
        }
        // The profile is the worker's registered one, not whatever the receipt declares.
        let worker = match self.signer.ledger().worker(&r.worker_key).await {
            Ok(w) => w,
            Err(e) => return Check::Unavailable(format!("worker registry unavailable: {e:#}")),
        };
        if let Err(m) =
            crate::onchain::receipt_matches_worker(&r, worker.as_ref().map(|w| &w.worker))
        {
            return reject(m.to_string());
        }
        let engine = self.engine.clone();
        let model_id = self.model_id;
        // Profiles the chain accepts are compared within the calibrated thresholds; the
        // worker's own is its registered one (checked above).
        let mut cross_profiles = match self.signer.ledger().params().await {
            Ok(p) => p.profiles,
            Err(e) => return Check::Unavailable(format!("chain parameters unavailable: {e:#}")),
        };
        // The ledger took this receipt only under a profile accepted when it was posted;
        // one disallowed since is still judged as it was posted (the worker's registered
        // profile, checked above).
        cross_profiles.push(r.profile_id.clone());
        let cfg = deai_proof::VerifyConfig {
            background_patience: (!patience.is_zero()).then_some(patience),
            cross_profiles,
            pov_key: pov_key.map(|k| k.0),
            ..Default::default()
        };
        let _turn = self.prefill.lock().await;
        let report = tokio::task::spawn_blocking(move || {
            deai_proof::verify_with(&r, &engine, &model_id, &cfg)
        })
        .await;
        match report {
            Ok(rep) if rep.accepted() => Check::Done(Finding {
                job: *id,
                accept: true,
                pov: rep.pov.map(Hash256),
                reason: None,
            }),
            Ok(rep) => Check::Done(Finding {
                job: *id,
                accept: false,
                pov: rep.pov.map(Hash256),
                reason: Some(
                    rep.first_failure()
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .unwrap_or_else(|| "rejected".into()),
                ),
            }),
            Err(e) => reject(format!("verification task failed: {e}")),
        }
    }

    async fn fetch(&self, pointer: &str) -> anyhow::Result<String> {
        if !pointer.starts_with("http://") && !pointer.starts_with("https://") {
            anyhow::bail!("pointer is not an http(s) URL");
        }
        let client = crate::http_client(pointer, Duration::from_secs(10));
        let r = client.get(pointer).send().await?;
        if !r.status().is_success() {
            anyhow::bail!("HTTP {}", r.status());
        }
        let b = r.bytes().await?;
        if b.len() > crate::MAX_BODY {
            anyhow::bail!("receipt larger than {} bytes", crate::MAX_BODY);
        }
        Ok(String::from_utf8(b.to_vec())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a restart a validator re-executes and must find which (vote, proof) its
    /// commitment on chain opens: its finding, the flipped vote, or a rejection without a
    /// proof; an acceptance without a proof is never sealed.
    #[test]
    fn a_sealed_verdict_is_reopened_from_a_new_finding() {
        let pov = Hash256([7; 32]);
        let f = |accept, pov| Finding {
            job: Hash256([1; 32]),
            accept,
            pov,
            reason: None,
        };
        assert_eq!(sealable_pov(&f(true, Some(pov))), Some(pov));
        assert_eq!(sealable_pov(&f(true, None)), None);
        assert_eq!(sealable_pov(&f(false, None)), Some(Hash256::default()));
        // Committed to (false, pov); re-executed to (true, pov): the flipped vote opens it.
        let committed = |a: bool, p: &Hash256| !a && *p == pov;
        assert_eq!(
            reopen(&f(true, Some(pov)), pov, committed),
            Some((false, pov))
        );
        // Committed to a rejection without a proof; the new finding has one.
        let no_proof = |a: bool, p: &Hash256| !a && *p == Hash256::default();
        assert_eq!(
            reopen(&f(true, Some(pov)), pov, no_proof),
            Some((false, Hash256::default()))
        );
        // Another proof than the one committed to: nothing opens it.
        let other = |_: bool, p: &Hash256| *p == Hash256([9; 32]);
        assert_eq!(reopen(&f(true, Some(pov)), pov, other), None);
    }

    /// A new chain accepts exactly the CPU engine's kernel profile: the ledger's seed and
    /// the engine's id must not drift apart, or no worker could register.
    #[test]
    fn the_ledgers_default_profile_is_the_engines() {
        assert_eq!(
            deai_ledger::state::DEFAULT_PROFILE,
            deai_engine::profile::PROFILE_ID
        );
        assert_eq!(
            deai_ledger::Params::default().profiles,
            vec![deai_engine::profile::PROFILE_ID.to_string()]
        );
    }

    #[test]
    fn yield_budget_follows_the_observed_block_time_and_the_cap() {
        let ms = Duration::from_millis;
        // No block time observed yet: no yielding.
        assert_eq!(yield_budget(ms(500), 0, 1_000, ms(30_000)), Duration::ZERO);
        // 10 ms blocks, 1000 blocks left: half of 10 s.
        assert_eq!(yield_budget(ms(100), 10, 1_000, ms(30_000)), ms(5_000));
        // The cap wins when the window is long.
        assert_eq!(yield_budget(ms(100), 10, 1_000_000, ms(30_000)), ms(30_000));
        // At or past the deadline: none.
        assert_eq!(yield_budget(ms(100), 10, 1, ms(30_000)), Duration::ZERO);
        assert_eq!(yield_budget(ms(100), 10, 0, ms(30_000)), Duration::ZERO);
        // A zero cap never yields.
        assert_eq!(
            yield_budget(ms(100), 10, 1_000, Duration::ZERO),
            Duration::ZERO
        );
        // Huge inputs saturate instead of overflowing.
        assert_eq!(yield_budget(Duration::MAX / 2, 1, u64::MAX, ms(7)), ms(7));
    }
}
