//! The first state: genesis accounts, validators and parameters, and the chain id they
//! hash to.

use super::beacon::{BeaconConfig, GenesisBeacon};
use super::{err, Account, Key, Meta, Params, State, Validator};
use crate::smt::Tree;
use crate::tx::Address;
use deai_types::Hash256;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Blocks per epoch when a genesis names none.
pub const DEFAULT_EPOCH_LENGTH: u64 = 1_000;

fn default_epoch_length() -> u64 {
    DEFAULT_EPOCH_LENGTH
}

/// A genesis account or validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    #[serde(with = "crate::tx::hex_addr")]
    pub address: Address,
    pub balance: u64,
    #[serde(default)]
    pub stake: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    #[serde(with = "crate::tx::hex_addr")]
    pub address: Address,
    pub endpoint: String,
    /// Its consensus p2p address (`host:port`), or empty.
    #[serde(default)]
    pub p2p: String,
}

/// Everything the first state is made of. Its canonical hash is the chain id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_name: String,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<GenesisValidator>,
    pub params: Params,
    /// Blocks per consensus epoch (at least 2); the validator set can change only between
    /// epochs.
    #[serde(default = "default_epoch_length")]
    pub epoch_length: u64,
    /// The randomness beacon's key (`state::beacon`), dealt to (some of) the validators.
    #[serde(default)]
    pub beacon: Option<GenesisBeacon>,
    /// Royalty splits of models allowed at genesis (as a `SetRoyalty` proposal would name
    /// them).
    #[serde(default)]
    pub royalties: Vec<GenesisRoyalty>,
}

/// A model's royalty beneficiaries at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisRoyalty {
    pub model: Hash256,
    pub beneficiaries: Vec<crate::tx::Beneficiary>,
}

impl Genesis {
    pub fn chain_id(&self) -> Hash256 {
        let bytes = postcard::to_allocvec(self).expect("genesis encodes");
        Hash256::digest_parts("deai-genesis", &[&bytes])
    }
}

impl State {
    /// The state at height 0.
    pub fn from_genesis(g: &Genesis) -> Result<State, String> {
        if g.epoch_length < 2 {
            return err(format!(
                "epoch length {} must be at least 2 blocks",
                g.epoch_length
            ));
        }
        g.params.validate_for(g.epoch_length)?;
        if g.chain_name.is_empty() || g.chain_name.len() > 64 {
            return err("chain name must be 1..=64 bytes");
        }
        let mut params = g.params.clone();
        params.allowed_models.sort();
        params.allowed_models.dedup();
        let mut s = State {
            meta: Meta {
                chain_id: g.chain_id(),
                height: 0,
                supply: 0,
                burned: 0,
                treasury: 0,
                total_stake: 0,
                next_proposal: 1,
                delegated: 0,
                params,
                epoch_length: g.epoch_length,
                validator_set: Vec::new(),
                beacon: None,
            },
            accounts: OrdMap::new(),
            workers: OrdMap::new(),
            validators: OrdMap::new(),
            jobs: OrdMap::new(),
            proposals: OrdMap::new(),
            trainings: OrdMap::new(),
            beacons: OrdMap::new(),
            datasets: OrdMap::new(),
            apps: OrdMap::new(),
            allowances: OrdMap::new(),
            royalties: OrdMap::new(),
            delegations: OrdMap::new(),
            deadlines: OrdSet::new(),
            tree: Tree::new(),
            root: Hash256::default(),
            dirty: BTreeSet::new(),
            events: Vec::new(),
        };
        for a in &g.accounts {
            if s.accounts.contains_key(&a.address) {
                return err(format!(
                    "duplicate genesis account {}",
                    hex::encode(a.address)
                ));
            }
            let total = a
                .balance
                .checked_add(a.stake)
                .ok_or("genesis amounts overflow")?;
            s.meta.supply = s
                .meta
                .supply
                .checked_add(total)
                .ok_or("genesis supply overflows u64")?;
            s.meta.total_stake += a.stake;
            s.accounts.insert(
                a.address,
                Account {
                    balance: a.balance,
                    stake: a.stake,
                    ..Default::default()
                },
            );
            s.dirty.insert(Key::Account(a.address));
        }
        for r in &g.royalties {
            if !s.meta.params.model_allowed(&r.model) {
                return err(format!(
                    "genesis royalty for model {}, which it does not allow",
                    r.model.short()
                ));
            }
            Self::check_beneficiaries(&r.beneficiaries)?;
            if r.beneficiaries.is_empty() || r.beneficiaries.len() > crate::tx::MAX_BENEFICIARIES {
                return err(format!(
                    "a genesis royalty names 1..={} beneficiaries",
                    crate::tx::MAX_BENEFICIARIES
                ));
            }
            s.set_royalty(r.model, &r.beneficiaries);
        }
        for v in &g.validators {
            let stake = s.accounts.get(&v.address).map_or(0, |a| a.stake);
            if stake < s.meta.params.min_validator_stake {
                return err(format!(
                    "genesis validator {} has stake {stake} below the minimum {}",
                    hex::encode(v.address),
                    s.meta.params.min_validator_stake
                ));
            }
            s.validators.insert(
                v.address,
                Validator {
                    endpoint: v.endpoint.clone(),
                    p2p: v.p2p.clone(),
                    ..Default::default()
                },
            );
            s.dirty.insert(Key::Validator(v.address));
        }
        if let Some(b) = &g.beacon {
            s.meta.beacon = Some(beacon_config(b, &s)?);
        }
        // Empty only for a ledger run without consensus (benchmarks, tools).
        s.meta.validator_set = s.next_validator_set();
        s.flush();
        Ok(s)
    }
}

/// Checks a genesis beacon key: it decodes, its players are genesis validators, and its
/// period is sane.
fn beacon_config(b: &GenesisBeacon, s: &State) -> Result<BeaconConfig, String> {
    use commonware_codec::Encode;
    if !(1..=1_000).contains(&b.period) {
        return err(format!(
            "beacon period {} must be within 1..=1000 blocks",
            b.period
        ));
    }
    let out = super::beacon::decode_output(&b.output)?;
    let mut players = Vec::new();
    for pk in out.players().iter() {
        let mut a = [0u8; 32];
        a.copy_from_slice(pk.as_ref());
        if !s.validators.contains_key(&a) {
            return err(format!(
                "beacon player {} is not a genesis validator",
                hex::encode(a)
            ));
        }
        players.push(a);
    }
    let quorum = out.quorum::<commonware_utils::N3f1>();
    if quorum != out.public().required() {
        return err(format!(
            "the beacon key needs {} partials to recover, not the quorum {quorum} of its {} players",
            out.public().required(),
            players.len()
        ));
    }
    Ok(BeaconConfig {
        output: b.output.clone(),
        group_key: out.public().public().encode().to_vec(),
        players,
        quorum,
        period: b.period,
    })
}
