//! Balances and stake: transfers, staking, unbonding and its release, and slashing what an
//! account holds (a worker's receipt rejected, a validator's equivocation).

use super::{bps_of, err, Key, Res, State, Unbond, DL_UNBOND, MAX_SLASHED_VIEWS};
use crate::tx::Address;

impl State {
    pub(super) fn transfer(&mut self, from: Address, to: &Address, amount: u64) -> Res {
        if amount == 0 {
            return err("transfer of 0");
        }
        self.debit(&from, amount, "transfer")?;
        self.credit(to, amount);
        Ok(())
    }

    pub(super) fn stake(&mut self, from: Address, amount: u64) -> Res {
        if amount == 0 {
            return err("stake of 0");
        }
        self.debit(&from, amount, "stake")?;
        let h = self.meta.height;
        let acct = self.acct_mut(&from);
        acct.stake += amount;
        acct.bonded_at = h;
        self.meta.total_stake += amount;
        Ok(())
    }

    /// Moves stake into an unbonding entry released `unbonding_period` blocks from now; a
    /// worker's collateral for unsettled receipts stays bonded.
    pub(super) fn unstake(&mut self, from: Address, amount: u64) -> Res {
        let have = self.account(&from).stake;
        if amount == 0 || amount > have {
            return err(format!("unstake {amount} of stake {have}"));
        }
        let locked = self.workers.get(&from).map_or(0, |w| w.locked);
        if have - amount < locked {
            return err(format!(
                "unstake {amount} would leave {} of stake, below the {locked} locked as \
                 collateral for unsettled receipts",
                have - amount
            ));
        }
        let release = self
            .meta
            .height
            .saturating_add(self.meta.params.unbonding_period);
        let acct = self.acct_mut(&from);
        acct.stake -= amount;
        acct.unbonding.push(Unbond { amount, release });
        self.meta.total_stake -= amount;
        self.deadlines.insert((release, DL_UNBOND, from));
        Ok(())
    }

    /// Pays out `who`'s unbonding entries due at `h`.
    pub(super) fn release_unbonding(&mut self, who: Address, h: u64) {
        let a = self.acct_mut(&who);
        let mut released = 0u64;
        a.unbonding.retain(|u| {
            if u.release <= h {
                released += u.amount;
                false
            } else {
                true
            }
        });
        a.balance = a.balance.saturating_add(released);
    }

    /// Takes `slash_bps` of what `who` holds, but at least `floor` (a receipt's
    /// collateral) and at most everything (stake first, then the newest unbonding entries),
    /// and returns the amount taken; the caller decides where it goes.
    pub(super) fn slash_holdings(&mut self, who: &Address, floor: u64) -> u64 {
        let held = self.account(who).holdings();
        let slash = bps_of(held, self.meta.params.slash_bps)
            .max(floor)
            .min(held);
        self.take_holdings(who, slash)
    }

    /// Takes up to `amount` from `who`'s stake, then from its newest unbonding entries (so
    /// unstaking does not dodge a slash), and returns what it took; the caller decides where
    /// it goes.
    pub(super) fn take_holdings(&mut self, who: &Address, amount: u64) -> u64 {
        let mut left = amount;
        let a = self.acct_mut(who);
        let from_stake = left.min(a.stake);
        a.stake -= from_stake;
        left -= from_stake;
        while left > 0 {
            let Some(u) = a.unbonding.last_mut() else {
                break;
            };
            let take = left.min(u.amount);
            u.amount -= take;
            left -= take;
            if u.amount == 0 {
                a.unbonding.pop();
            }
        }
        self.meta.total_stake -= from_stake;
        amount - left
    }

    /// Slashes a validator for equivocating in `view` (the chain has checked the evidence):
    /// once per view, `reporter_bps` of it to the reporter, the rest burned.
    pub(super) fn report_equivocation(
        &mut self,
        reporter: Address,
        offender: Address,
        view: u64,
    ) -> Res {
        if reporter == offender {
            return err(
                "a validator cannot report itself (it would earn a share of its own slash)",
            );
        }
        let Some(v) = self.validators.get(&offender) else {
            return err("the reported key is not a registered validator");
        };
        if v.slashed_views.binary_search(&view).is_ok() {
            return err(format!("already slashed for view {view}"));
        }
        if v.slashed_views.len() >= MAX_SLASHED_VIEWS && v.slashed_views[0] > view {
            return err(format!(
                "view {view} is older than the {MAX_SLASHED_VIEWS} views this validator was slashed for"
            ));
        }
        let held = self.account(&offender).holdings();
        let own = self.slash_holdings(&offender, 0);
        if own == 0 {
            return err("the validator holds nothing to slash");
        }
        let reward = bps_of(own, self.meta.params.reporter_bps);
        self.credit(&reporter, reward);
        self.meta.burned += own - reward;
        // Its delegators' pool loses the same share (burned; `slash_pool` counts it).
        let slash = own + self.slash_pool(&offender, own, held);
        let v = self.validators.get_mut(&offender).expect("checked above");
        v.slashed += slash;
        let at = v.slashed_views.partition_point(|x| *x < view);
        v.slashed_views.insert(at, view);
        if v.slashed_views.len() > MAX_SLASHED_VIEWS {
            v.slashed_views.remove(0);
        }
        self.dirty.insert(Key::Validator(offender));
        self.events.push(format!(
            "validator {} slashed {slash} for equivocation in view {view}",
            hex::encode(&offender[..4])
        ));
        Ok(())
    }
}
