//! Everyone else a job's fee reaches: the people behind its model (royalties), the data the
//! model was trained on (datasets), the app that brought the request, and the gateway that
//! opened it for a client who keeps its own key (allowances); and grants from the treasury.
//!
//! Who is paid what, per settled job (`jobs::accept_job` calls [`State::pay_royalty`]):
//! - out of the job's cost: `royalty_bps` to its model's beneficiaries when the model has a
//!   royalty record (set by governance: named beneficiaries, or derived from the training
//!   job that produced the model: trainers by accepted contributions, data owners by the
//!   tokens of the shards it trained on);
//! - on top of the cost, from the client's escrow: the app's fee (fixed when the job opened,
//!   at most `app_fee_cap_bps`) and the gateway's (`gateway_fee_bps` when the job opened).
//!   They are surcharges, not cuts, so a client that names its own app or gateway only pays
//!   itself: it cannot take anything from the worker that way.
//!
//! Every division rounds down and its remainder goes to the treasury, so each split sums to
//! what it divides to the unit (the audit checks every settlement).

use super::records::{Allowance, App, Dataset, Royalty, RoyaltyRole, RoyaltyShare};
use super::TrainingStatus;
use super::{bps_of, err, Key, Res, State, BPS};
use crate::tx::{Address, Beneficiary, DataShard, Shard, MAX_SHARDS};
use deai_types::Hash256;

/// Longest app name.
pub const MAX_APP_NAME: usize = 64;

/// A dataset's id: its owner and its shards (so nobody can register someone else's
/// registration first: the same shards under another owner are another dataset).
pub fn dataset_id(owner: &Address, shards: &[Shard]) -> Hash256 {
    let mut parts: Vec<Vec<u8>> = vec![owner.to_vec()];
    for s in shards {
        parts.push([&s.hash.0[..], &s.tokens.to_be_bytes()].concat());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Hash256::digest_parts("deai-dataset", &refs)
}

/// An app's id: its owner and name.
pub fn app_id(owner: &Address, name: &str) -> Hash256 {
    Hash256::digest_parts("deai-app", &[owner, name.as_bytes()])
}

/// The largest cost a job escrowing `escrow` may bill when `surcharge_bps` (its app's and
/// gateway's fees) come on top: `cost + cost x surcharge_bps / 10000 <= escrow`.
pub fn billable(escrow: u64, surcharge_bps: u64) -> u64 {
    ((escrow as u128 * BPS as u128) / (BPS as u128 + surcharge_bps as u128)) as u64
}

/// The smallest escrow whose [`billable`] cost is at least `cost` when `surcharge_bps` come
/// on top (a gateway escrows this much).
pub fn escrow_for(cost: u64, surcharge_bps: u64) -> u64 {
    let e = (cost as u128 * (BPS as u128 + surcharge_bps as u128)).div_ceil(BPS as u128);
    e.min(u64::MAX as u128) as u64
}

/// The most an app's and a gateway's fees can add to a job whatever governance sets (the
/// upper bounds of `app_fee_cap_bps` and `gateway_fee_bps`): a worker that accepts a job
/// naming an app or a gateway checks the escrow leaves room for them.
pub fn max_surcharge_bps() -> u64 {
    use crate::tx::Param;
    super::Params::bounds(Param::AppFeeCapBps).1 + super::Params::bounds(Param::GatewayFeeBps).1
}

impl State {
    pub fn dataset(&self, id: &Hash256) -> Option<&Dataset> {
        self.datasets.get(id)
    }
    pub fn datasets(&self) -> impl Iterator<Item = (&Hash256, &Dataset)> {
        self.datasets.iter()
    }
    pub fn app(&self, id: &Hash256) -> Option<&App> {
        self.apps.get(id)
    }
    pub fn apps(&self) -> impl Iterator<Item = (&Hash256, &App)> {
        self.apps.iter()
    }
    /// What `client` lets `gateway` escrow.
    pub fn allowance(&self, client: &Address, gateway: &Address) -> Option<&Allowance> {
        self.allowances.get(&(*client, *gateway))
    }
    pub fn allowances(&self) -> impl Iterator<Item = (&(Address, Address), &Allowance)> {
        self.allowances.iter()
    }
    /// A model's royalty record, if it has one.
    pub fn royalty(&self, model: &Hash256) -> Option<&Royalty> {
        self.royalties.get(model)
    }
    pub fn royalties(&self) -> impl Iterator<Item = (&Hash256, &Royalty)> {
        self.royalties.iter()
    }

    pub(super) fn register_dataset(
        &mut self,
        from: Address,
        license: &str,
        shards: &[Shard],
    ) -> Res {
        if shards.is_empty() || shards.len() > MAX_SHARDS {
            return err(format!("a dataset lists 1..={MAX_SHARDS} shards"));
        }
        if shards.iter().any(|s| s.tokens == 0) {
            return err("every shard must hold tokens");
        }
        let mut hashes: Vec<Hash256> = shards.iter().map(|s| s.hash).collect();
        hashes.sort();
        if hashes.windows(2).any(|w| w[0] == w[1]) {
            return err("a shard is listed twice");
        }
        if shards.iter().map(|s| s.tokens as u128).sum::<u128>() > u64::MAX as u128 {
            return err("the shards' tokens overflow");
        }
        let id = dataset_id(&from, shards);
        if self.datasets.contains_key(&id) {
            return err(format!("dataset {} is already registered", id.short()));
        }
        self.datasets.insert(
            id,
            Dataset {
                owner: from,
                license: license.to_string(),
                shards: shards.to_vec(),
                registered_at: self.meta.height,
                earned: 0,
            },
        );
        self.dirty.insert(Key::Dataset(id));
        self.events.push(format!(
            "dataset {} registered ({} shards)",
            id.short(),
            shards.len()
        ));
        Ok(())
    }

    pub(super) fn register_app(&mut self, from: Address, name: &str, fee_bps: u64) -> Res {
        if name.is_empty() || name.len() > MAX_APP_NAME {
            return err(format!("an app name is 1..={MAX_APP_NAME} bytes"));
        }
        let cap = self.meta.params.app_fee_cap_bps;
        if fee_bps > cap {
            return err(format!("app fee {fee_bps} bps is above the cap {cap} bps"));
        }
        let id = app_id(&from, name);
        let h = self.meta.height;
        let app = self.apps.entry(id).or_insert_with(|| App {
            owner: from,
            name: name.to_string(),
            fee_bps,
            registered_at: h,
            jobs: 0,
            earned: 0,
        });
        app.fee_bps = fee_bps;
        self.dirty.insert(Key::App(id));
        Ok(())
    }

    pub(super) fn authorize(
        &mut self,
        from: Address,
        gateway: Address,
        limit: u64,
        expires: u64,
    ) -> Res {
        if gateway == from {
            return err("a client cannot authorize itself as its gateway");
        }
        let key = (from, gateway);
        self.dirty.insert(Key::Allowance(from, gateway));
        if limit == 0 {
            return match self.allowances.remove(&key) {
                Some(_) => Ok(()),
                None => err("no allowance to revoke"),
            };
        }
        if expires < self.meta.height {
            return err(format!(
                "the allowance would expire at {expires}, before the current height {}",
                self.meta.height
            ));
        }
        let a = self.allowances.entry(key).or_insert(Allowance {
            remaining: 0,
            expires,
            spent: 0,
            earned: 0,
        });
        a.remaining = limit;
        a.expires = expires;
        Ok(())
    }

    /// Checks that `gateway` may escrow `amount` for `client` now (nothing changes).
    pub(super) fn check_allowance(&self, client: &Address, gateway: &Address, amount: u64) -> Res {
        let Some(a) = self.allowance(client, gateway) else {
            return err("the client has not authorized this gateway");
        };
        if self.meta.height > a.expires {
            return err(format!(
                "the client's allowance expired at height {}",
                a.expires
            ));
        }
        if a.remaining < amount {
            return err(format!(
                "escrow {amount} exceeds what the client still allows this gateway ({})",
                a.remaining
            ));
        }
        Ok(())
    }

    /// Spends an allowance [`State::check_allowance`] accepted.
    pub(super) fn spend_allowance(&mut self, client: &Address, gateway: &Address, amount: u64) {
        if let Some(a) = self.allowances.get_mut(&(*client, *gateway)) {
            a.remaining -= amount.min(a.remaining);
            a.spent = a.spent.saturating_add(amount);
            self.dirty.insert(Key::Allowance(*client, *gateway));
        }
    }

    /// Credits an app's owner and a gateway for a settled job.
    pub(super) fn pay_surcharges(
        &mut self,
        client: &Address,
        app: Option<(Hash256, u64)>,
        gateway: Option<(Address, u64)>,
    ) {
        if let Some((id, amount)) = app {
            if let Some(a) = self.apps.get_mut(&id) {
                a.jobs += 1;
                a.earned = a.earned.saturating_add(amount);
                let owner = a.owner;
                self.dirty.insert(Key::App(id));
                self.credit(&owner, amount);
            }
        }
        if let Some((g, amount)) = gateway {
            if let Some(a) = self.allowances.get_mut(&(*client, g)) {
                a.earned = a.earned.saturating_add(amount);
                self.dirty.insert(Key::Allowance(*client, g));
            }
            self.credit(&g, amount);
        }
    }

    /// Each shard a training job names must be in the dataset it names, once.
    pub(super) fn check_training_data(&self, data: &[DataShard]) -> Res {
        let mut seen: Vec<&DataShard> = data.iter().collect();
        seen.sort();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return err("a training shard is named twice");
        }
        for d in data {
            let ds = self
                .datasets
                .get(&d.dataset)
                .ok_or_else(|| format!("unknown dataset {}", d.dataset.short()))?;
            if !ds.shards.iter().any(|s| s.hash == d.shard) {
                return err(format!(
                    "shard {} is not in dataset {}",
                    d.shard.short(),
                    d.dataset.short()
                ));
            }
        }
        Ok(())
    }

    /// Pays `amount` (a settled job's royalty) to `model`'s beneficiaries in proportion to
    /// their weights, the data providers' group its `data_bps` and the others the rest;
    /// returns what was paid (the caller sends the rounding remainder to the treasury).
    pub(super) fn pay_royalty(&mut self, model: &Hash256, amount: u64) -> u64 {
        let Some(mut r) = self.royalties.get(model).cloned() else {
            return 0;
        };
        let data_part = bps_of(amount, r.data_bps);
        let parts = [(true, data_part), (false, amount - data_part)];
        let mut paid = 0u64;
        let mut to_datasets: Vec<(Hash256, u64)> = Vec::new();
        for (data, part) in parts {
            let in_group = |s: &RoyaltyShare| matches!(s.role, RoyaltyRole::Data(_)) == data;
            let total: u128 = r
                .shares
                .iter()
                .filter(|s| in_group(s))
                .map(|s| s.weight as u128)
                .sum();
            if total == 0 {
                continue;
            }
            for s in r.shares.iter_mut().filter(|s| in_group(s)) {
                let each = (part as u128 * s.weight as u128 / total) as u64;
                s.paid = s.paid.saturating_add(each);
                paid += each;
                self.credit(&s.to, each);
                if let RoyaltyRole::Data(ds) = s.role {
                    to_datasets.push((ds, each));
                }
            }
        }
        for (ds, each) in to_datasets {
            if let Some(d) = self.datasets.get_mut(&ds) {
                d.earned = d.earned.saturating_add(each);
                self.dirty.insert(Key::Dataset(ds));
            }
        }
        r.jobs += 1;
        r.paid = r.paid.saturating_add(paid);
        self.royalties.insert(*model, r);
        self.dirty.insert(Key::Royalty(*model));
        paid
    }

    /// Governance: names a model's beneficiaries (an empty list ends its royalty).
    pub(super) fn check_beneficiaries(b: &[Beneficiary]) -> Res {
        if b.iter().any(|b| b.weight == 0) {
            return err("every beneficiary needs a positive weight");
        }
        let mut to: Vec<&Address> = b.iter().map(|b| &b.to).collect();
        to.sort();
        if to.windows(2).any(|w| w[0] == w[1]) {
            return err("a beneficiary is named twice");
        }
        Ok(())
    }

    pub(super) fn set_royalty(&mut self, model: Hash256, b: &[Beneficiary]) {
        self.dirty.insert(Key::Royalty(model));
        if b.is_empty() {
            self.royalties.remove(&model);
            return;
        }
        let (jobs, paid) = self
            .royalties
            .get(&model)
            .map_or((0, 0), |r| (r.jobs, r.paid));
        let shares = b
            .iter()
            .map(|b| RoyaltyShare {
                to: b.to,
                role: RoyaltyRole::Named,
                weight: b.weight,
                paid: 0,
            })
            .collect();
        self.royalties.insert(
            model,
            Royalty {
                training: None,
                data_bps: 0,
                shares,
                jobs,
                paid,
            },
        );
    }

    /// Governance: allows `model` as the export of finished training job `training` and
    /// derives its royalty from the job's record.
    pub(super) fn allow_trained_model(&mut self, model: Hash256, training: Hash256) -> Res {
        let t = self
            .trainings
            .get(&training)
            .ok_or_else(|| format!("unknown training job {}", training.short()))?;
        if t.status != TrainingStatus::Finished {
            return err(format!(
                "training job {} is {:?}, not finished",
                training.short(),
                t.status
            ));
        }
        let mut shares: Vec<RoyaltyShare> = t
            .credits
            .iter()
            .map(|c| RoyaltyShare {
                to: c.to,
                role: RoyaltyRole::Trainer,
                weight: c.accepted,
                paid: 0,
            })
            .collect();
        // One share per dataset: the tokens of its shards the job trained on.
        let mut by_dataset: std::collections::BTreeMap<Hash256, u64> = Default::default();
        for d in &t.data {
            let Some(ds) = self.datasets.get(&d.dataset) else {
                continue;
            };
            let tokens = ds
                .shards
                .iter()
                .find(|s| s.hash == d.shard)
                .map_or(0, |s| s.tokens);
            let w = by_dataset.entry(d.dataset).or_default();
            *w = w.saturating_add(tokens);
        }
        for (ds, weight) in &by_dataset {
            shares.push(RoyaltyShare {
                to: self.datasets[ds].owner,
                role: RoyaltyRole::Data(*ds),
                weight: *weight,
                paid: 0,
            });
        }
        let has_trainers = !t.credits.is_empty();
        let data_bps = match (has_trainers, by_dataset.is_empty()) {
            (false, true) => return err("the training job credits no trainer and no data"),
            (true, true) => 0,
            (false, false) => BPS,
            (true, false) => self.meta.params.data_royalty_bps,
        };
        if let Err(i) = self.meta.params.allowed_models.binary_search(&model) {
            self.meta.params.allowed_models.insert(i, model);
        }
        self.royalties.insert(
            model,
            Royalty {
                training: Some(training),
                data_bps,
                shares,
                jobs: 0,
                paid: 0,
            },
        );
        self.dirty.insert(Key::Royalty(model));
        Ok(())
    }

    /// Governance: a grant from the treasury.
    pub(super) fn grant(&mut self, to: Address, amount: u64) -> Res {
        if self.meta.treasury < amount {
            return err(format!(
                "the treasury holds {}, less than the grant {amount}",
                self.meta.treasury
            ));
        }
        self.meta.treasury -= amount;
        self.credit(&to, amount);
        Ok(())
    }
}
