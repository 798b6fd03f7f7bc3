//! The governance parameters in force and the sanity checks a change must pass.

use super::BPS;
use crate::tx::Param;
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// Governance parameters in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub price_floor: u64,
    pub sample_rate_bps: u64,
    pub slash_bps: u64,
    pub challenge_window: u64,
    pub verdict_window: u64,
    pub job_timeout: u64,
    pub unbonding_period: u64,
    pub treasury_bps: u64,
    pub validator_fee_bps: u64,
    pub min_worker_stake: u64,
    pub min_validator_stake: u64,
    pub challenge_bond: u64,
    pub min_fee: u64,
    pub quorum_bps: u64,
    pub threshold_bps: u64,
    pub voting_period: u64,
    pub execution_delay: u64,
    /// Models jobs may name, sorted.
    pub allowed_models: Vec<Hash256>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            price_floor: 1,
            sample_rate_bps: 1_000,
            slash_bps: 5_000,
            challenge_window: 20,
            verdict_window: 40,
            job_timeout: 60,
            unbonding_period: 100,
            treasury_bps: 500,
            validator_fee_bps: 1_000,
            min_worker_stake: 1_000,
            min_validator_stake: 10_000,
            challenge_bond: 100,
            min_fee: 1,
            quorum_bps: 3_334,
            threshold_bps: 5_001,
            voting_period: 20,
            execution_delay: 5,
            allowed_models: Vec::new(),
        }
    }
}

impl Params {
    pub fn get(&self, p: Param) -> u64 {
        match p {
            Param::PriceFloor => self.price_floor,
            Param::SampleRateBps => self.sample_rate_bps,
            Param::SlashBps => self.slash_bps,
            Param::ChallengeWindow => self.challenge_window,
            Param::VerdictWindow => self.verdict_window,
            Param::JobTimeout => self.job_timeout,
            Param::UnbondingPeriod => self.unbonding_period,
            Param::TreasuryBps => self.treasury_bps,
            Param::ValidatorFeeBps => self.validator_fee_bps,
            Param::MinWorkerStake => self.min_worker_stake,
            Param::MinValidatorStake => self.min_validator_stake,
            Param::ChallengeBond => self.challenge_bond,
            Param::MinFee => self.min_fee,
            Param::QuorumBps => self.quorum_bps,
            Param::ThresholdBps => self.threshold_bps,
            Param::VotingPeriod => self.voting_period,
            Param::ExecutionDelay => self.execution_delay,
        }
    }

    pub(super) fn slot(&mut self, p: Param) -> &mut u64 {
        match p {
            Param::PriceFloor => &mut self.price_floor,
            Param::SampleRateBps => &mut self.sample_rate_bps,
            Param::SlashBps => &mut self.slash_bps,
            Param::ChallengeWindow => &mut self.challenge_window,
            Param::VerdictWindow => &mut self.verdict_window,
            Param::JobTimeout => &mut self.job_timeout,
            Param::UnbondingPeriod => &mut self.unbonding_period,
            Param::TreasuryBps => &mut self.treasury_bps,
            Param::ValidatorFeeBps => &mut self.validator_fee_bps,
            Param::MinWorkerStake => &mut self.min_worker_stake,
            Param::MinValidatorStake => &mut self.min_validator_stake,
            Param::ChallengeBond => &mut self.challenge_bond,
            Param::MinFee => &mut self.min_fee,
            Param::QuorumBps => &mut self.quorum_bps,
            Param::ThresholdBps => &mut self.threshold_bps,
            Param::VotingPeriod => &mut self.voting_period,
            Param::ExecutionDelay => &mut self.execution_delay,
        }
    }

    /// Whether `p = v` is a sane setting; governance refuses proposals that are not.
    pub fn check(p: Param, v: u64) -> Result<(), String> {
        let bps = matches!(
            p,
            Param::SampleRateBps
                | Param::SlashBps
                | Param::TreasuryBps
                | Param::ValidatorFeeBps
                | Param::QuorumBps
                | Param::ThresholdBps
        );
        let blocks = matches!(
            p,
            Param::ChallengeWindow
                | Param::VerdictWindow
                | Param::JobTimeout
                | Param::UnbondingPeriod
                | Param::VotingPeriod
                | Param::ExecutionDelay
        );
        if bps && v > BPS {
            return Err(format!("{} must be at most {BPS} basis points", p.name()));
        }
        if blocks && !(1..=1_000_000).contains(&v) {
            return Err(format!("{} must be 1..=1000000 blocks", p.name()));
        }
        if matches!(p, Param::ThresholdBps | Param::QuorumBps) && v == 0 {
            return Err(format!("{} must be positive", p.name()));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        for p in Param::ALL {
            Self::check(p, self.get(p))?;
        }
        if self.treasury_bps + self.validator_fee_bps > BPS {
            return Err("treasury_bps + validator_fee_bps exceed 10000".into());
        }
        Ok(())
    }

    pub fn model_allowed(&self, m: &Hash256) -> bool {
        self.allowed_models.binary_search(m).is_ok()
    }
}
