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
    /// Stake locked per receipt, in basis points of its billed cost (see
    /// [`Params::check_incentives`]).
    pub collateral_bps: u64,
    /// A slash's share paid to its reporter; the rest is burned.
    pub reporter_bps: u64,
    /// Validators the beacon draws to re-execute each sampled receipt.
    #[serde(default = "default_committee_size")]
    pub committee_size: u64,
    /// Taken from a validator's stake for each verdict against the outcome its job settled
    /// with (and for a committee deadline it missed).
    #[serde(default = "default_verdict_slash")]
    pub verdict_slash: u64,
    /// A settled job's share paid to its model's royalty beneficiaries (if it has any).
    #[serde(default = "default_royalty_bps")]
    pub royalty_bps: u64,
    /// Of a trained model's royalty, its data providers' share (fixed when it is allowed).
    #[serde(default = "default_data_royalty_bps")]
    pub data_royalty_bps: u64,
    /// Highest fee an app may ask, on top of the cost of each job it brings.
    #[serde(default = "default_app_fee_cap_bps")]
    pub app_fee_cap_bps: u64,
    /// A gateway's fee, on top of the cost of each job it opens for an authorizing client.
    #[serde(default = "default_gateway_fee_bps")]
    pub gateway_fee_bps: u64,
    /// A validator's cut of what its delegators' stake earns.
    #[serde(default = "default_commission_bps")]
    pub commission_bps: u64,
    /// Models jobs may name, sorted.
    pub allowed_models: Vec<Hash256>,
    /// Kernel profiles workers may register (and receipts declare), sorted. Validators
    /// compare a receipt of another profile than their own within the calibrated
    /// cross-profile thresholds only if it is listed here.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
}

/// The kernel profile of deai's CPU engine (`deai_engine::profile::PROFILE_ID`; a node test
/// keeps the two equal): the one profile a new chain accepts.
pub const DEFAULT_PROFILE: &str = "deai-cpu-bi-v1";

fn default_committee_size() -> u64 {
    3
}

fn default_verdict_slash() -> u64 {
    1_000
}

fn default_royalty_bps() -> u64 {
    500
}

fn default_data_royalty_bps() -> u64 {
    5_000
}

fn default_app_fee_cap_bps() -> u64 {
    1_000
}

fn default_gateway_fee_bps() -> u64 {
    200
}

fn default_commission_bps() -> u64 {
    1_000
}

fn default_profiles() -> Vec<String> {
    vec![DEFAULT_PROFILE.to_string()]
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
            // An epoch (1000 blocks by default) plus the challenge and verdict windows: a
            // validator or worker that unstakes is still slashable for everything it did.
            unbonding_period: 1_100,
            treasury_bps: 500,
            validator_fee_bps: 1_000,
            min_worker_stake: 1_000,
            min_validator_stake: 10_000,
            challenge_bond: 100,
            min_fee: 1,
            quorum_bps: 3_334,
            threshold_bps: 5_001,
            voting_period: 1_100,
            execution_delay: 5,
            collateral_bps: 100_000,
            reporter_bps: 1_000,
            committee_size: default_committee_size(),
            verdict_slash: default_verdict_slash(),
            royalty_bps: default_royalty_bps(),
            data_royalty_bps: default_data_royalty_bps(),
            app_fee_cap_bps: default_app_fee_cap_bps(),
            gateway_fee_bps: default_gateway_fee_bps(),
            commission_bps: default_commission_bps(),
            allowed_models: Vec::new(),
            profiles: default_profiles(),
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
            Param::CollateralBps => self.collateral_bps,
            Param::ReporterBps => self.reporter_bps,
            Param::CommitteeSize => self.committee_size,
            Param::VerdictSlash => self.verdict_slash,
            Param::RoyaltyBps => self.royalty_bps,
            Param::DataRoyaltyBps => self.data_royalty_bps,
            Param::AppFeeCapBps => self.app_fee_cap_bps,
            Param::GatewayFeeBps => self.gateway_fee_bps,
            Param::CommissionBps => self.commission_bps,
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
            Param::CollateralBps => &mut self.collateral_bps,
            Param::ReporterBps => &mut self.reporter_bps,
            Param::CommitteeSize => &mut self.committee_size,
            Param::VerdictSlash => &mut self.verdict_slash,
            Param::RoyaltyBps => &mut self.royalty_bps,
            Param::DataRoyaltyBps => &mut self.data_royalty_bps,
            Param::AppFeeCapBps => &mut self.app_fee_cap_bps,
            Param::GatewayFeeBps => &mut self.gateway_fee_bps,
            Param::CommissionBps => &mut self.commission_bps,
        }
    }

    /// The values `p` may take: the bounds that keep the chain live and cheating
    /// unprofitable whatever governance decides. Governance refuses proposals outside them.
    pub fn bounds(p: Param) -> (u64, u64) {
        match p {
            Param::PriceFloor => (0, 1_000_000_000),
            // At least 1% of receipts is re-executed (with the collateral rule below).
            Param::SampleRateBps => (100, BPS),
            Param::SlashBps => (1_000, BPS),
            // Windows the validators can meet: at least 10 blocks.
            Param::ChallengeWindow | Param::VerdictWindow => (10, 1_000_000),
            Param::JobTimeout => (10, 1_000_000),
            // Lower bounds that depend on the epoch length: see `validate_for`.
            Param::UnbondingPeriod | Param::VotingPeriod => (10, 1_000_000),
            Param::ExecutionDelay => (1, 1_000_000),
            Param::TreasuryBps | Param::ValidatorFeeBps => (0, BPS),
            Param::MinWorkerStake | Param::MinValidatorStake => (1, u64::MAX / 4),
            Param::ChallengeBond => (1, 1_000_000_000),
            // A fee nobody can pay would stop every transaction, governance's own included.
            Param::MinFee => (1, 10_000),
            // A quorum above half the stake lets an abstaining half freeze governance.
            Param::QuorumBps => (1_000, 5_000),
            // A majority, but never so high that a large minority blocks every change
            // (10000 with a strict comparison could never pass again).
            Param::ThresholdBps => (5_001, 8_000),
            Param::CollateralBps => (0, 10_000_000),
            // Enough to pay for bringing evidence, never enough to make a false rejection
            // (by a cartel that can reach a quorum) a business.
            Param::ReporterBps => (0, 5_000),
            // One honest member is enough to escalate a lie to every validator.
            Param::CommitteeSize => (1, 64),
            Param::VerdictSlash => (0, u64::MAX / 4),
            // The worker keeps most of what it bills whatever the model's owners vote.
            Param::RoyaltyBps => (0, 3_000),
            Param::DataRoyaltyBps => (0, BPS),
            // Surcharges a client pays on top of the cost: bounded so that an app or a
            // gateway cannot take most of a client's escrow.
            Param::AppFeeCapBps => (0, 3_000),
            Param::GatewayFeeBps => (0, 1_000),
            Param::CommissionBps => (0, BPS),
        }
    }

    /// Whether `p = v` is within [`Params::bounds`].
    pub fn check(p: Param, v: u64) -> Result<(), String> {
        let (lo, hi) = Self::bounds(p);
        if !(lo..=hi).contains(&v) {
            return Err(format!("{} must be within {lo}..={hi}, got {v}", p.name()));
        }
        Ok(())
    }

    /// The expected-value rule: a worker that posts a receipt for work it did not do (or
    /// did wrong) is caught with probability `s = sample_rate_bps / 10000` and then loses
    /// at least its collateral `C = cost x collateral_bps / 10000`; otherwise it is paid
    /// `P < cost`. Faking pays `(1 - s) P - s C`, which is negative for every job when
    /// `s C >= (1 - s) cost`, i.e. `sample_rate_bps x collateral_bps >= (10000 -
    /// sample_rate_bps) x 10000`. The defaults (10% sampling, 10x collateral) give
    /// `-0.1 x 10 cost + 0.9 P < -0.1 cost` per fake job. docs/economics.md writes the model
    /// out.
    pub fn check_incentives(&self) -> Result<(), String> {
        let lhs = self.sample_rate_bps as u128 * self.collateral_bps as u128;
        let rhs = (BPS - self.sample_rate_bps.min(BPS)) as u128 * BPS as u128;
        if lhs < rhs {
            return Err(format!(
                "collateral_bps {} is too low for sample_rate_bps {}: faking a receipt would \
                 pay in expectation (need sample_rate_bps x collateral_bps >= (10000 - \
                 sample_rate_bps) x 10000, i.e. collateral_bps >= {})",
                self.collateral_bps,
                self.sample_rate_bps,
                rhs.div_ceil(self.sample_rate_bps.max(1) as u128)
            ));
        }
        Ok(())
    }

    /// Every bound, the shares' sum, the incentive rule, and the periods that must cover an
    /// epoch of `epoch_length` blocks plus the evidence window (challenge + verdict): a
    /// staker who unstakes stays slashable, and a vote outlasts an epoch's set change.
    pub fn validate_for(&self, epoch_length: u64) -> Result<(), String> {
        for p in Param::ALL {
            Self::check(p, self.get(p))?;
        }
        if self.treasury_bps + self.validator_fee_bps + self.royalty_bps > BPS {
            return Err("treasury_bps + validator_fee_bps + royalty_bps exceed 10000".into());
        }
        if self.profiles.is_empty() {
            return Err("at least one kernel profile must be accepted".into());
        }
        if let Some(p) = self.profiles.iter().find(|p| p.is_empty() || p.len() > 64) {
            return Err(format!("kernel profile id {p:?} must be 1..=64 bytes"));
        }
        self.check_incentives()?;
        let evidence = self.challenge_window.saturating_add(self.verdict_window);
        let need = epoch_length.saturating_add(evidence);
        if self.unbonding_period < need {
            return Err(format!(
                "unbonding_period {} must cover an epoch ({epoch_length}) plus the challenge \
                 and verdict windows ({evidence}): at least {need}",
                self.unbonding_period
            ));
        }
        if self.voting_period < epoch_length {
            return Err(format!(
                "voting_period {} must cover an epoch ({epoch_length} blocks)",
                self.voting_period
            ));
        }
        Ok(())
    }

    /// Raises `unbonding_period` and `voting_period` to the least [`Params::validate_for`]
    /// accepts for `epoch_length` (for genesis files built with long windows or short
    /// epochs); other parameters are left as they are.
    pub fn fit_periods(mut self, epoch_length: u64) -> Self {
        let evidence = self.challenge_window.saturating_add(self.verdict_window);
        self.unbonding_period = self
            .unbonding_period
            .max(epoch_length.saturating_add(evidence));
        self.voting_period = self.voting_period.max(epoch_length);
        self
    }

    pub fn profile_allowed(&self, p: &str) -> bool {
        self.profiles.iter().any(|x| x == p)
    }

    pub fn model_allowed(&self, m: &Hash256) -> bool {
        self.allowed_models.binary_search(m).is_ok()
    }
}
