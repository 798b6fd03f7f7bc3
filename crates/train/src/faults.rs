//! Cheating training workers, for tests, benchmarks and demos (cargo feature `faults`, off by
//! default), in the style of commonware's `simplex/mocks`: each cheater class the verifier
//! must catch is a [`Behavior`] that lies through the honest worker's [`Tamper`] seam, so
//! the honest worker ([`crate::diloco::WorkerRun`], [`crate::run::run_round`]) holds no
//! cheating branch.

use crate::data::Shard;
use crate::diloco::{Int8Delta, Tamper};
use crate::model::Weights;
use deai_types::Hash256;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How a worker behaves: honest, or one of the cheater classes verification must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    Honest,
    /// Sends random values instead of its pseudo-gradient.
    RandomDelta,
    /// Sends its pseudo-gradient times 3.
    ScaledDelta,
    /// Skips the inner steps' compute (the state only counts steps).
    SkipSteps,
    /// Trains on another shard than the one assigned, and claims the assigned one.
    WrongShard,
    /// Trains on its shard with every 16th token replaced.
    PoisonedShard,
    /// Starts from the previous round's checkpoint and claims the current one.
    StaleCheckpoint,
    /// Sends the same contribution twice.
    Replay,
    /// Computes every inner step but one, which it skips (the state only counts it): the
    /// cheapest cheat to hide. The step is [`Behavior::skipped_step`], chosen before the
    /// challenge is drawn. Caught only when the challenge re-executes that step, so it is
    /// not among [`Behavior::CHEATERS`] (caught every time); `deai bench train` measures
    /// its detection rate against [`crate::diloco::skip_detection_probability`].
    SkipOneStep,
}

impl Behavior {
    /// The step (`1..=H`) a [`Behavior::SkipOneStep`] worker with round seed `seed` skips.
    pub fn skipped_step(seed: u64, h: u32) -> u32 {
        let d = Hash256::digest_parts("deai-train-skip-v1", &[&seed.to_le_bytes()]);
        1 + (u64::from_le_bytes(d.0[..8].try_into().expect("8 bytes")) % h.max(1) as u64) as u32
    }

    pub const CHEATERS: [Behavior; 7] = [
        Behavior::RandomDelta,
        Behavior::ScaledDelta,
        Behavior::SkipSteps,
        Behavior::WrongShard,
        Behavior::PoisonedShard,
        Behavior::StaleCheckpoint,
        Behavior::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behavior::Honest => "honest",
            Behavior::RandomDelta => "random-delta",
            Behavior::ScaledDelta => "scaled-delta",
            Behavior::SkipSteps => "skip-steps",
            Behavior::WrongShard => "wrong-shard",
            Behavior::PoisonedShard => "poisoned-shard",
            Behavior::StaleCheckpoint => "stale-checkpoint",
            Behavior::Replay => "replay",
            Behavior::SkipOneStep => "skip-one-step",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Behavior::Honest, Behavior::SkipOneStep]
            .into_iter()
            .chain(Behavior::CHEATERS)
            .find(|b| b.name() == s)
    }

    /// The tamper a worker playing this behavior trains with: `None` for an honest one.
    pub fn tamper(self) -> Option<Arc<dyn Tamper>> {
        match self {
            Behavior::Honest => None,
            cheat => Some(Arc::new(cheat)),
        }
    }
}

impl Tamper for Behavior {
    fn name(&self) -> &str {
        Behavior::name(*self)
    }

    fn resends(&self) -> bool {
        *self == Behavior::Replay
    }

    fn wants_previous(&self) -> bool {
        *self == Behavior::StaleCheckpoint
    }

    fn start(&self, checkpoint: &Weights, previous: Option<&Weights>) -> Weights {
        match (self, previous) {
            (Behavior::StaleCheckpoint, Some(p)) => p.clone(),
            _ => checkpoint.clone(),
        }
    }

    fn shard(&self, shards: &[Shard], assigned: usize) -> Shard {
        match self {
            Behavior::WrongShard => shards[(assigned + 1) % shards.len()].clone(),
            Behavior::PoisonedShard => {
                let mut shard = shards[assigned].clone();
                for t in shard.tokens.iter_mut().step_by(16) {
                    *t = crate::config::BYTE_OFFSET as u16 + b'X' as u16;
                }
                shard
            }
            _ => shards[assigned].clone(),
        }
    }

    fn skips(&self, seed: u64, step: u32, inner_steps: u32) -> bool {
        match self {
            Behavior::SkipSteps => true,
            Behavior::SkipOneStep => step == Behavior::skipped_step(seed, inner_steps),
            _ => false,
        }
    }

    fn delta(&self, delta: &mut Int8Delta) {
        match self {
            Behavior::RandomDelta => {
                let mut x = 0x9e3779b97f4a7c15u64;
                for v in delta.values.iter_mut().flatten() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *v = ((x % 255) as i16 - 127) as i8;
                }
            }
            Behavior::ScaledDelta => delta.scales.iter_mut().flatten().for_each(|s| *s *= 3.0),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviors_parse_by_name() {
        for b in Behavior::CHEATERS {
            assert_eq!(Behavior::parse(b.name()), Some(b));
        }
        assert_eq!(Behavior::parse("honest"), Some(Behavior::Honest));
        assert_eq!(
            Behavior::parse("skip-one-step"),
            Some(Behavior::SkipOneStep)
        );
        assert_eq!(Behavior::parse("lazy"), None);
    }

    #[test]
    fn only_the_honest_behavior_has_no_tamper() {
        assert!(Behavior::Honest.tamper().is_none());
        for b in Behavior::CHEATERS
            .into_iter()
            .chain([Behavior::SkipOneStep])
        {
            assert_eq!(b.tamper().expect("a cheater tampers").name(), b.name());
        }
    }
}
