//! The worker and validator registries, and the consensus validator set chosen from them
//! by stake once per epoch.

use super::{err, Key, Res, State, Validator, Worker};
use crate::tx::Address;
use deai_types::Hash256;

/// The most validators in one epoch's consensus set (the highest stakes win; ties go to the
/// lower address).
pub const MAX_CONSENSUS_VALIDATORS: usize = 100;

impl State {
    /// Registers `from` as a worker, or updates its offer (keeping its history); a slashed
    /// worker becomes active again this way once its stake is back at the minimum.
    pub(super) fn register_worker(
        &mut self,
        from: Address,
        models: &[Hash256],
        profile: &str,
        hardware: &str,
        price_per_1k: u64,
        endpoint: &str,
    ) -> Res {
        let h = self.meta.height;
        let p = &self.meta.params;
        if models.is_empty() {
            return err("a worker must serve at least one model");
        }
        if let Some(m) = models.iter().find(|m| !p.model_allowed(m)) {
            return err(format!("model {} is not allowed by governance", m.short()));
        }
        if !p.profile_allowed(profile) {
            return err(format!(
                "kernel profile {profile:?} is not accepted by this chain (accepted: {})",
                p.profiles.join(", ")
            ));
        }
        if price_per_1k < p.price_floor {
            return err(format!(
                "price {price_per_1k} below the floor {}",
                p.price_floor
            ));
        }
        let stake = self.account(&from).stake;
        if stake < p.min_worker_stake {
            return err(format!(
                "stake {stake} below the worker minimum {}",
                p.min_worker_stake
            ));
        }
        let mut models = models.to_vec();
        models.sort();
        models.dedup();
        let prev = self.workers.get(&from).cloned();
        let w = Worker {
            models,
            profile: profile.to_string(),
            hardware: hardware.to_string(),
            price_per_1k,
            endpoint: endpoint.to_string(),
            active: true,
            registered_at: prev.as_ref().map_or(h, |w| w.registered_at),
            jobs_done: prev.as_ref().map_or(0, |w| w.jobs_done),
            jobs_rejected: prev.as_ref().map_or(0, |w| w.jobs_rejected),
            tokens_served: prev.as_ref().map_or(0, |w| w.tokens_served),
            earned: prev.as_ref().map_or(0, |w| w.earned),
            slashed: prev.as_ref().map_or(0, |w| w.slashed),
            locked: prev.as_ref().map_or(0, |w| w.locked),
        };
        self.workers.insert(from, w);
        self.dirty.insert(Key::Worker(from));
        Ok(())
    }

    /// Registers `from` as a validator, or updates its addresses (keeping its history).
    pub(super) fn register_validator(&mut self, from: Address, endpoint: &str, p2p: &str) -> Res {
        let h = self.meta.height;
        let stake = self.account(&from).stake;
        let min = self.meta.params.min_validator_stake;
        if stake < min {
            return err(format!("stake {stake} below the validator minimum {min}"));
        }
        if !p2p.is_empty() && p2p.parse::<std::net::SocketAddr>().is_err() {
            return err(format!("p2p address {p2p:?} is not host:port"));
        }
        // A re-registration changes the addresses and keeps the record (its history and
        // its delegators' pool).
        let mut v = self.validators.get(&from).cloned().unwrap_or(Validator {
            registered_at: h,
            ..Default::default()
        });
        v.endpoint = endpoint.to_string();
        v.p2p = p2p.to_string();
        self.validators.insert(from, v);
        self.dirty.insert(Key::Validator(from));
        Ok(())
    }

    /// The consensus validator set for the next block (see
    /// [`Meta::validator_set`](super::Meta::validator_set)).
    pub fn validator_set(&self) -> &[Address] {
        &self.meta.validator_set
    }

    /// The epoch containing `height`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.meta.epoch_length
    }

    /// Whether `height` is the last block of its epoch (after which the set may change).
    pub fn is_epoch_end(&self, height: u64) -> bool {
        height % self.meta.epoch_length == self.meta.epoch_length - 1
    }

    /// The set the active validators would form now: the [`MAX_CONSENSUS_VALIDATORS`]
    /// highest weights (ties to the lower address), sorted by address.
    pub fn next_validator_set(&self) -> Vec<Address> {
        let mut v = self.active_validators();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(MAX_CONSENSUS_VALIDATORS);
        let mut set: Vec<Address> = v.into_iter().map(|(a, _)| a).collect();
        set.sort_unstable();
        set
    }

    /// Validators whose own stake meets the minimum, with their weight (own stake plus
    /// their delegators' pool, [`State::weight`]).
    pub fn active_validators(&self) -> Vec<(Address, u64)> {
        let min = self.meta.params.min_validator_stake;
        self.validators
            .keys()
            .filter(|a| self.account(a).stake >= min)
            .map(|a| (*a, self.weight(a)))
            .collect()
    }
}
