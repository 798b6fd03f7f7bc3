//! Stake delegation: anyone can back a validator with their balance without running one.
//!
//! Each validator has a pool: the tokens its delegators put in, plus the rewards their stake
//! earned, less what slashes took. Delegators hold shares of it, so rewards and slashes reach
//! every delegator pro rata without touching their records:
//! - **weight**: a validator's weight in verdicts, committees and the consensus set is its own
//!   stake plus its pool as of the last epoch's end ([`State::weight`]; what leaves the pool
//!   stops weighing at once, what joins weighs from the next epoch, so nobody can borrow
//!   weight for one verdict); the minimum to be a validator is on its own stake, so a
//!   validator always has its own stake at risk;
//! - **rewards**: of each payment to a validator ([`State::pay_validator`]), the pool's share
//!   by weight goes into the pool, less `commission_bps` that stays with the validator;
//! - **slashes**: a validator's slash takes the same share of its pool, and of the stake
//!   leaving it, as of its own stake ([`State::slash_pool`]), and burns it;
//! - **governance**: each delegation made before a proposal opened weighs with its delegator's
//!   vote, or else with its validator's (`governance::tally`).
//!
//! Undelegating moves the tokens out of the pool into the validator's `leaving` list, where a
//! slash of the validator still reaches them for `unbonding_period` blocks; then they go back
//! to the delegator, or into another validator's pool (a redelegation takes as long).

use super::records::{Delegation, Leaving, MAX_LEAVING};
use super::{bps_of, err, Key, Res, State, DL_UNDELEGATE};
use crate::tx::Address;

impl State {
    /// A validator's weight: its own stake plus its delegators' pool as of the last epoch's
    /// end (less what left it since).
    pub fn weight(&self, validator: &Address) -> u64 {
        let pool = self
            .validators
            .get(validator)
            .map_or(0, |v| v.pool.min(v.pool_weight));
        self.account(validator).stake.saturating_add(pool)
    }

    /// At an epoch's end: every pool weighs what it holds now.
    pub(super) fn settle_pool_weights(&mut self) {
        let changed: Vec<Address> = self
            .validators
            .iter()
            .filter(|(_, v)| v.pool_weight != v.pool)
            .map(|(a, _)| *a)
            .collect();
        for a in changed {
            let v = self.validators.get_mut(&a).expect("listed above");
            v.pool_weight = v.pool;
            self.dirty.insert(Key::Validator(a));
        }
    }

    /// `delegator`'s delegation to `validator`, if any.
    pub fn delegation(&self, delegator: &Address, validator: &Address) -> Option<&Delegation> {
        self.delegations.get(&(*delegator, *validator))
    }

    /// Every delegation of `delegator`: (validator, shares, their value now).
    pub fn delegations_of(&self, delegator: &Address) -> Vec<(Address, u64, u64)> {
        self.delegations
            .range((*delegator, [0u8; 32])..=(*delegator, [0xffu8; 32]))
            .map(|((_, v), d)| (*v, d.shares, self.share_value(v, d.shares)))
            .collect()
    }

    pub fn delegations(&self) -> impl Iterator<Item = (&(Address, Address), &Delegation)> {
        self.delegations.iter()
    }

    /// What `shares` of `validator`'s pool are worth now.
    pub fn share_value(&self, validator: &Address, shares: u64) -> u64 {
        match self.validators.get(validator) {
            Some(v) if v.shares > 0 => (shares as u128 * v.pool as u128 / v.shares as u128) as u64,
            _ => 0,
        }
    }

    pub(super) fn delegate(&mut self, from: Address, validator: Address, amount: u64) -> Res {
        if amount == 0 {
            return err("delegation of 0");
        }
        if from == validator {
            return err("a validator stakes, it does not delegate to itself");
        }
        let have = self.account(&from).balance;
        if have < amount {
            return err(format!("delegation: balance {have} < {amount}"));
        }
        self.mint(&validator, amount)?;
        self.debit(&from, amount, "delegation")?;
        self.add_to_pool(from, validator, amount)
    }

    /// The shares `amount` buys in `validator`'s pool now (nothing changes).
    fn mint(&self, validator: &Address, amount: u64) -> Result<u64, String> {
        let Some(v) = self.validators.get(validator) else {
            return err("not a registered validator");
        };
        let minted = match (v.pool, v.shares) {
            (_, 0) => amount as u128,
            (0, _) => return err("the validator's pool was slashed to nothing"),
            (pool, shares) => amount as u128 * shares as u128 / pool as u128,
        };
        if minted == 0 {
            return err("the amount buys no share of the pool");
        }
        if v.shares as u128 + minted > u64::MAX as u128 || v.pool.checked_add(amount).is_none() {
            return err("the pool would overflow");
        }
        Ok(minted as u64)
    }

    /// Puts `amount` (already taken from `from`) into `validator`'s pool for `from`.
    fn add_to_pool(&mut self, from: Address, validator: Address, amount: u64) -> Res {
        let h = self.meta.height;
        let minted = self.mint(&validator, amount)?;
        let v = self
            .validators
            .get_mut(&validator)
            .expect("mint checked it");
        v.pool += amount;
        v.shares += minted;
        self.dirty.insert(Key::Validator(validator));
        self.meta.delegated = self.meta.delegated.saturating_add(amount);
        let d = self
            .delegations
            .entry((from, validator))
            .or_insert(Delegation {
                shares: 0,
                since: h,
            });
        d.shares += minted;
        d.since = h;
        self.dirty.insert(Key::Delegation(from, validator));
        Ok(())
    }

    pub(super) fn undelegate(
        &mut self,
        from: Address,
        validator: Address,
        amount: u64,
        to: Option<Address>,
    ) -> Res {
        let d = self
            .delegation(&from, &validator)
            .ok_or("no delegation to this validator")?
            .clone();
        if to == Some(validator) || to == Some(from) {
            return err("redelegation to the same validator or to oneself");
        }
        if let Some(t) = to {
            if !self.validators.contains_key(&t) {
                return err("redelegation to a key that is not a registered validator");
            }
        }
        let v = &self.validators[&validator];
        if v.leaving.len() >= MAX_LEAVING {
            return err(format!(
                "{MAX_LEAVING} undelegations from this validator are still unbonding; try \
                 again once some are released"
            ));
        }
        let value = self.share_value(&validator, d.shares);
        let amount = if amount == 0 { value } else { amount };
        if amount > value {
            return err(format!("undelegate {amount} of a delegation worth {value}"));
        }
        // Shares burned: rounded up, so nobody takes out more than their shares are worth;
        // the last shares of the pool take whatever is left in it.
        let burn = (amount as u128 * v.shares as u128).div_ceil(v.pool.max(1) as u128) as u64;
        let burn = burn.min(d.shares);
        let amount = if burn == v.shares { v.pool } else { amount };
        if amount == 0 {
            return err("nothing to undelegate");
        }
        let release = self
            .meta
            .height
            .saturating_add(self.meta.params.unbonding_period);
        let v = self.validators.get_mut(&validator).expect("checked above");
        v.pool -= amount;
        v.pool_weight = v.pool_weight.min(v.pool);
        v.shares -= burn;
        // Still the validator's (and `delegated`) until released: its slashes reach it.
        v.leaving.push(Leaving {
            delegator: from,
            amount,
            release,
            to,
        });
        self.dirty.insert(Key::Validator(validator));
        self.deadlines.insert((release, DL_UNDELEGATE, validator));
        self.dirty.insert(Key::Delegation(from, validator));
        if burn == d.shares {
            self.delegations.remove(&(from, validator));
        } else if let Some(d) = self.delegations.get_mut(&(from, validator)) {
            d.shares -= burn;
        }
        Ok(())
    }

    /// Releases `validator`'s undelegations due at `h`: to their delegators, or into the
    /// pool they were redelegated to (back to the delegator if that pool takes none now).
    pub(super) fn release_leaving(&mut self, validator: Address, h: u64) {
        let Some(v) = self.validators.get_mut(&validator) else {
            return;
        };
        let (due, kept): (Vec<Leaving>, Vec<Leaving>) = std::mem::take(&mut v.leaving)
            .into_iter()
            .partition(|l| l.release <= h);
        v.leaving = kept;
        self.dirty.insert(Key::Validator(validator));
        for l in due {
            self.meta.delegated -= l.amount;
            let moved = match l.to {
                Some(t) if l.amount > 0 && self.mint(&t, l.amount).is_ok() => {
                    self.add_to_pool(l.delegator, t, l.amount).is_ok()
                }
                _ => false,
            };
            if !moved {
                self.credit(&l.delegator, l.amount);
            }
        }
    }

    /// Pays `amount` to validator `v`: its pool's share by weight goes into the pool, less
    /// the commission, which the validator keeps with the rest. Returns what `v` itself got.
    pub(super) fn pay_validator(&mut self, v: &Address, amount: u64) -> u64 {
        let stake = self.account(v).stake as u128;
        let pool = self.validators.get(v).map_or(0, |x| x.pool) as u128;
        let share = match stake + pool {
            0 => 0,
            total => (amount as u128 * pool / total) as u64,
        };
        let to_pool = share - bps_of(share, self.meta.params.commission_bps);
        let own = amount - to_pool;
        // `share` is 0 for a key that is not a validator (it has no pool).
        if let Some(val) = self.validators.get_mut(v) {
            val.pool += to_pool;
            val.earned += own;
            self.meta.delegated += to_pool;
            self.dirty.insert(Key::Validator(*v));
        }
        self.credit(v, own);
        own
    }

    /// Takes from `v`'s pool, and from each undelegation still leaving it, the share
    /// `taken / held` that a slash took of its own holdings (`held` before the slash), burns
    /// it and returns it.
    pub(super) fn slash_pool(&mut self, v: &Address, taken: u64, held: u64) -> u64 {
        let Some(val) = self.validators.get_mut(v) else {
            return 0;
        };
        let share = |x: u64| match held {
            0 => 0,
            _ => ((x as u128 * taken as u128 / held as u128) as u64).min(x),
        };
        let mut cut = share(val.pool);
        val.pool -= cut;
        val.pool_weight = val.pool_weight.min(val.pool);
        for l in val.leaving.iter_mut() {
            let c = share(l.amount);
            l.amount -= c;
            cut += c;
        }
        self.meta.delegated -= cut;
        self.meta.burned += cut;
        self.dirty.insert(Key::Validator(*v));
        cut
    }
}
