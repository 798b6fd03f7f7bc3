//! The whole training network in one process, as `deai train` runs it: a coordinator and
//! one training worker per key over HTTP on loopback, each with its own server (for
//! openings), as on separate hosts; optionally with the job on a chain ([`chain`]), whose
//! other validators judge every round. [`job`] builds the job itself, the same way for the
//! command and for the training benchmark.
//!
//! Owns: wiring those roles together and following the rounds to the end. The roles
//! themselves live in [`crate::training`], the chain launcher in [`crate::devnet`].

pub mod chain;
pub mod job;

use crate::training::{serve_worker, TrainAuditor, TrainCoordinator, TrainWorker};
use anyhow::Result;
use chain::{ChainAt, OnchainJob, OnchainSummary};
use deai_ledger::Address;
use deai_train::diloco::Tamper;
use deai_train::{Coordinator, RoundReport, Weights};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Who trains and how long a round may take.
#[derive(Clone)]
pub struct NetworkOptions {
    /// Honest workers.
    pub workers: u32,
    /// Seeds the workers' keys: the same seed gives the same workers.
    pub seed: u64,
    /// One more worker that cheats this way, if any.
    pub cheater: Option<Arc<dyn Tamper>>,
    /// A round closes at this deadline even if some workers have not contributed.
    pub round_deadline: Duration,
}

/// Called after every inner step of any worker with (round, step, loss).
pub type OnStep = Arc<dyn Fn(u32, u32, f32) + Send + Sync>;

/// What the chain side leaves for the summary.
struct ChainRecord {
    urls: Vec<String>,
    ledger: deai_client::ChainClient,
    judges: Vec<Address>,
}

/// A running training network: [`TrainingNetwork::start`] serves the coordinator (and opens
/// the job on chain), [`TrainingNetwork::run`] starts the workers and follows the rounds to
/// the last, and [`TrainingNetwork::finish`] stops the judges and reads the outcome. The
/// coordinator keeps serving (its explorer too) until the network is dropped.
pub struct TrainingNetwork {
    coordinator: TrainCoordinator,
    url: String,
    job_id: Hash256,
    /// The workers' keys and behaviors, until [`TrainingNetwork::run`] starts them.
    workers: Vec<(SigningKey, Option<Arc<dyn Tamper>>)>,
    /// Each worker's address and behavior name (its role in the summary).
    roles: Vec<(Address, String)>,
    chain: Option<ChainRecord>,
    auditors: Vec<JoinHandle<()>>,
}

/// What a finished network leaves.
pub struct TrainingOutcome {
    /// The last merged checkpoint.
    pub weights: Weights,
    /// Every round's report, in order.
    pub reports: Vec<RoundReport>,
    /// The job on chain, if it ran on one.
    pub onchain: Option<OnchainSummary>,
}

impl TrainingNetwork {
    /// Derives the workers' keys, opens the job on `chain` if given (starting or attaching to
    /// it and staking the workers), serves the coordinator for `co`'s job on a loopback port,
    /// and starts the judges this process must run itself.
    pub async fn start(
        co: Coordinator,
        o: &NetworkOptions,
        chain: Option<ChainAt<'_>>,
    ) -> Result<Self> {
        let mut workers: Vec<(SigningKey, Option<Arc<dyn Tamper>>)> =
            job::worker_keys(o.workers, o.seed)
                .into_iter()
                .map(|k| (k, None))
                .collect();
        if let Some(b) = &o.cheater {
            workers.push((
                job::worker_keys(o.workers + 1, o.seed ^ 0xc4ea7)[o.workers as usize].clone(),
                Some(b.clone()),
            ));
        }
        let job_id = co.job.id();
        let on_chain = match chain {
            Some(at) => {
                let spec = OnchainJob {
                    job_id,
                    checkpoint: co.weights.hash(),
                    first_commitment: co.challenge_commitment(),
                    rounds: co.job.rounds,
                    workers: co.job.workers,
                    reward_per_round: co.job.reward_per_round,
                };
                let keys: Vec<SigningKey> = workers.iter().map(|(k, _)| k.clone()).collect();
                Some(chain::connect(at, &keys, spec).await?)
            }
            None => None,
        };
        let mut coordinator = TrainCoordinator::new(co, o.round_deadline)?;
        let mut record = None;
        let mut judges_here = vec![];
        if let Some(c) = on_chain {
            coordinator = coordinator.with_ledger(c.coordinator);
            judges_here = c.auditors;
            record = Some(ChainRecord {
                urls: c.urls,
                ledger: c.ledger,
                judges: c.judges,
            });
        }
        let addr = crate::serve("127.0.0.1:0".parse()?, coordinator.router()).await?;
        let url = format!("http://{addr}");
        coordinator.set_public_url(&url);
        // The other validators judge every proposed round before it settles (on a devnet,
        // its validators already do).
        let auditors = judges_here
            .into_iter()
            .map(|s| tokio::spawn(TrainAuditor::new(s).run()))
            .collect();
        let roles = workers
            .iter()
            .map(|(k, b)| {
                let role = b.as_ref().map_or("honest", |t| t.name());
                (k.verifying_key().to_bytes(), role.to_string())
            })
            .collect();
        Ok(TrainingNetwork {
            coordinator,
            url,
            job_id,
            workers,
            roles,
            chain: record,
            auditors,
        })
    }

    /// The coordinator's URL (its explorer at `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The job's id.
    pub fn job_id(&self) -> Hash256 {
        self.job_id
    }

    /// The chain nodes' API URLs, if the job runs on a chain.
    pub fn chain_urls(&self) -> Option<&[String]> {
        self.chain.as_ref().map(|c| c.urls.as_slice())
    }

    /// The open round's challenge commitment (before the first round: round 0's, which
    /// `deai train audit --commitment` needs).
    pub fn challenge_commitment(&self) -> Hash256 {
        self.coordinator.info().challenge_commitment
    }

    /// Starts the coordinator's rounds and every worker, each on its own loopback server,
    /// calling `on_step` after every worker's inner step and `on_round` once for each round
    /// as it closes; returns when the coordinator has closed the last round and the workers
    /// have stopped. A worker that fails is logged, not an error.
    pub async fn run(
        &mut self,
        on_step: OnStep,
        mut on_round: impl FnMut(&RoundReport) -> Result<()>,
    ) -> Result<()> {
        let rounds = tokio::spawn({
            let c = self.coordinator.clone();
            async move { c.run().await }
        });
        let mut handles = vec![];
        for (k, tamper) in std::mem::take(&mut self.workers) {
            let w = TrainWorker::new(k, &self.url, tamper, "");
            let w = serve_worker(w, "127.0.0.1:0".parse()?).await?;
            let on_step = on_step.clone();
            handles.push(tokio::spawn(async move { w.run(on_step).await }));
        }
        let mut seen = 0;
        loop {
            // Read "finished" first, so the reports read after it include the last round.
            let finished = rounds.is_finished();
            let reports = self.coordinator.reports();
            for r in &reports[seen..] {
                on_round(r)?;
            }
            seen = reports.len();
            if finished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rounds.await??;
        for h in handles {
            if let Err(e) = h.await? {
                tracing::warn!("a training worker stopped: {e:#}");
            }
        }
        Ok(())
    }

    /// Stops the judges this process ran and reads the outcome: the weights, the reports
    /// and, on a chain, the job's summary as finalized.
    pub async fn finish(self) -> Result<TrainingOutcome> {
        for t in &self.auditors {
            t.abort();
        }
        let onchain = match &self.chain {
            Some(c) => Some(chain::summary(&c.ledger, &self.job_id, &self.roles, &c.judges).await?),
            None => None,
        };
        Ok(TrainingOutcome {
            weights: self.coordinator.weights(),
            reports: self.coordinator.reports(),
            onchain,
        })
    }
}
