//! The supply invariant: every place money can be, plus what was burned, adds up to the
//! supply.

use super::{err, JobStatus, Res, State, TrainingStatus, MAX_CONSENSUS_VALIDATORS};

impl State {
    /// Sums every place money can be and checks it against supply minus burns.
    pub fn audit(&self) -> Res {
        let set = &self.meta.validator_set;
        if set.len() > MAX_CONSENSUS_VALIDATORS || set.windows(2).any(|w| w[0] >= w[1]) {
            return err("the consensus set is not sorted, unique and within the cap");
        }
        if let Some(a) = set.iter().find(|a| !self.validators.contains_key(*a)) {
            return err(format!(
                "consensus set member {} is not a registered validator",
                hex::encode(a)
            ));
        }
        let mut total: u128 = self.meta.treasury as u128;
        let mut stake: u128 = 0;
        for a in self.accounts.values() {
            total += a.balance as u128 + a.stake as u128 + a.unbonding_total();
            stake += a.stake as u128;
        }
        // Every worker's lock is exactly the collateral of its receipts not yet settled.
        let mut locks: std::collections::BTreeMap<crate::tx::Address, u128> =
            std::collections::BTreeMap::new();
        for j in self.jobs.values() {
            if let (false, Some(r)) = (j.status.is_final(), &j.receipt) {
                *locks.entry(r.worker).or_default() += r.collateral as u128;
            }
        }
        for (a, w) in self.workers.iter() {
            let want = locks.get(a).copied().unwrap_or(0);
            if w.locked as u128 != want {
                return err(format!(
                    "worker {} locks {} but its unsettled receipts' collateral is {want}",
                    hex::encode(&a[..4]),
                    w.locked
                ));
            }
        }
        for j in self.jobs.values() {
            if !j.status.is_final() {
                total += j.escrow as u128;
                if let Some(c) = &j.challenge {
                    total += c.bond as u128;
                }
            }
            // An accepted job's settlement record accounts for its escrow exactly.
            if let (JobStatus::Accepted, Some(s)) = (j.status, &j.settlement) {
                let bond = j.challenge.as_ref().map_or(0, |c| c.bond as u128);
                let parts = s.worker_paid as u128
                    + s.validator_fee as u128
                    + s.treasury_cut as u128
                    + s.client_refund as u128
                    + s.royalty as u128
                    + s.app_paid as u128
                    + s.gateway_paid as u128;
                if parts != j.escrow as u128 + bond {
                    return err(format!(
                        "job settlement parts {parts} != escrow {} + bond {bond}",
                        j.escrow
                    ));
                }
            }
        }
        let mut pools: u128 = 0;
        let mut shares: std::collections::BTreeMap<crate::tx::Address, u128> = Default::default();
        for ((_, v), d) in self.delegations.iter() {
            *shares.entry(*v).or_default() += d.shares as u128;
        }
        for (a, v) in self.validators.iter() {
            pools += v.pool as u128;
            pools += v.leaving.iter().map(|l| l.amount as u128).sum::<u128>();
            if shares.get(a).copied().unwrap_or(0) != v.shares as u128 {
                return err(format!(
                    "validator {} has {} pool shares but its delegations hold {}",
                    hex::encode(&a[..4]),
                    v.shares,
                    shares.get(a).copied().unwrap_or(0)
                ));
            }
        }
        if pools != self.meta.delegated as u128 {
            return err(format!(
                "pools and undelegations leaving them hold {pools} but delegated is {}",
                self.meta.delegated
            ));
        }
        total += pools;
        for (id, t) in self.trainings.iter() {
            total += t.escrow as u128;
            if !t.escrow_balanced() {
                return err(format!(
                    "training {}: paid {} + fees {} + refunded {} + held {} != escrowed {} x {}",
                    id.short(),
                    t.paid,
                    t.fees,
                    t.refunded,
                    t.escrow,
                    t.rounds,
                    t.reward_per_round
                ));
            }
            if t.status != TrainingStatus::Running && t.escrow != 0 {
                return err(format!("training {} ended holding escrow", id.short()));
            }
        }
        if total + self.meta.burned as u128 != self.meta.supply as u128 {
            return err(format!(
                "accounted {total} + burned {} != supply {}",
                self.meta.burned, self.meta.supply
            ));
        }
        if stake != self.meta.total_stake as u128 {
            return err(format!(
                "stake sum {stake} != total_stake {}",
                self.meta.total_stake
            ));
        }
        Ok(())
    }
}
