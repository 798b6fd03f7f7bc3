//! The whole state as canonical bytes, for restarts and state sync; loading one rebuilds
//! the deadline index and the tree and checks the root it names.

use super::{
    err, id_bytes, Account, Job, Key, Meta, Proposal, ProposalStatus, State, TrainingJob,
    TrainingStatus, Validator, Worker, DL_EXECUTE, DL_JOB, DL_TRAIN, DL_UNBOND, DL_UNDELEGATE,
    DL_VOTE_END,
};
use crate::smt::Tree;
use crate::tx::Address;
use deai_types::Hash256;
use imbl::OrdSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

impl State {
    /// The whole state, canonically encoded (for restarts and state sync).
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snap = Snapshot {
            meta: self.meta.clone(),
            accounts: self.accounts.iter().map(|(k, v)| (*k, v.clone())).collect(),
            workers: self.workers.iter().map(|(k, v)| (*k, v.clone())).collect(),
            validators: self
                .validators
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            jobs: self.jobs.iter().map(|(k, v)| (*k, v.clone())).collect(),
            proposals: self.proposals.iter().map(|(_, v)| v.clone()).collect(),
            trainings: self
                .trainings
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            beacons: self.beacons.iter().map(|(_, v)| v.clone()).collect(),
            datasets: self.datasets.iter().map(|(k, v)| (*k, v.clone())).collect(),
            apps: self.apps.iter().map(|(k, v)| (*k, v.clone())).collect(),
            allowances: self
                .allowances
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            royalties: self
                .royalties
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            delegations: self
                .delegations
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            root: self.root,
        };
        postcard::to_allocvec(&snap).expect("state encodes")
    }

    /// Rebuilds a state from [`State::to_snapshot`] bytes and checks the root it names.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, String> {
        let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| format!("snapshot: {e}"))?;
        let mut s = State {
            meta: snap.meta,
            accounts: snap.accounts.into_iter().collect(),
            workers: snap.workers.into_iter().collect(),
            validators: snap.validators.into_iter().collect(),
            jobs: snap.jobs.into_iter().collect(),
            proposals: snap.proposals.into_iter().map(|p| (p.id, p)).collect(),
            trainings: snap.trainings.into_iter().collect(),
            beacons: snap.beacons.into_iter().map(|b| (b.round, b)).collect(),
            datasets: snap.datasets.into_iter().collect(),
            apps: snap.apps.into_iter().collect(),
            allowances: snap.allowances.into_iter().collect(),
            royalties: snap.royalties.into_iter().collect(),
            delegations: snap.delegations.into_iter().collect(),
            deadlines: OrdSet::new(),
            tree: Tree::new(),
            root: Hash256::default(),
            dirty: BTreeSet::new(),
            events: Vec::new(),
        };
        let keys: Vec<Key> = std::iter::once(Key::Meta)
            .chain(s.accounts.keys().map(|a| Key::Account(*a)))
            .chain(s.workers.keys().map(|a| Key::Worker(*a)))
            .chain(s.validators.keys().map(|a| Key::Validator(*a)))
            .chain(s.jobs.keys().map(|j| Key::Job(*j)))
            .chain(s.proposals.keys().map(|p| Key::Proposal(*p)))
            .chain(s.trainings.keys().map(|t| Key::Training(*t)))
            .chain(s.beacons.keys().map(|r| Key::Beacon(*r)))
            .chain(s.datasets.keys().map(|d| Key::Dataset(*d)))
            .chain(s.apps.keys().map(|a| Key::App(*a)))
            .chain(s.allowances.keys().map(|(c, g)| Key::Allowance(*c, *g)))
            .chain(s.royalties.keys().map(|m| Key::Royalty(*m)))
            .chain(s.delegations.keys().map(|(d, v)| Key::Delegation(*d, *v)))
            .collect();
        s.dirty.extend(keys);
        // Rebuild the deadline index from the records.
        for (a, acct) in s.accounts.iter() {
            for u in &acct.unbonding {
                s.deadlines.insert((u.release, DL_UNBOND, *a));
            }
        }
        for (id, j) in s.jobs.iter() {
            if !j.status.is_final() {
                s.deadlines.insert((j.deadline, DL_JOB, id.0));
            }
        }
        for (a, v) in s.validators.iter() {
            for l in &v.leaving {
                s.deadlines.insert((l.release, DL_UNDELEGATE, *a));
            }
        }
        for (id, t) in s.trainings.iter() {
            if t.status == TrainingStatus::Running {
                s.deadlines.insert((t.deadline, DL_TRAIN, id.0));
            }
        }
        for (id, p) in s.proposals.iter() {
            match p.status {
                ProposalStatus::Voting => {
                    s.deadlines
                        .insert((p.voting_end, DL_VOTE_END, id_bytes(*id)))
                }
                ProposalStatus::Passed => s.deadlines.insert((
                    p.execute_at.unwrap_or(p.voting_end),
                    DL_EXECUTE,
                    id_bytes(*id),
                )),
                _ => None,
            };
        }
        s.flush();
        if s.root != snap.root {
            return err(format!(
                "snapshot root {} does not match its contents ({})",
                snap.root.short(),
                s.root.short()
            ));
        }
        s.audit()?;
        Ok(s)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    meta: Meta,
    accounts: Vec<(Address, Account)>,
    workers: Vec<(Address, Worker)>,
    validators: Vec<(Address, Validator)>,
    jobs: Vec<(Hash256, Job)>,
    proposals: Vec<Proposal>,
    trainings: Vec<(Hash256, TrainingJob)>,
    beacons: Vec<super::BeaconRound>,
    datasets: Vec<(Hash256, super::Dataset)>,
    apps: Vec<(Hash256, super::App)>,
    allowances: Vec<((Address, Address), super::Allowance)>,
    royalties: Vec<(Hash256, super::Royalty)>,
    delegations: Vec<((Address, Address), super::Delegation)>,
    root: Hash256,
}
