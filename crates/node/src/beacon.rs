//! The validator's beacon duty: sign every closed beacon round that holds receipts with this
//! validator's share of the beacon key, once (the ledger's `state::beacon` says why and
//! checks each partial).
//!
//! A round is signed only once the chain has finalized its last block (the chain lists only
//! such rounds as pending), so the value cannot be known before the receipts it samples are
//! fixed. The share comes from `deai chain init` (`keys/validator-N.share`).

use anyhow::{bail, Result};
use deai_client::Signer;
use deai_ledger::TxKind;
use deai_types::Hash256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a submitted partial may stay unrecorded before it is sent again (the first may
/// have been dropped from a mempool).
const RESEND: Duration = Duration::from_secs(5);
/// Submissions of one round's partial before this signer gives up on it (a share that does
/// not verify would otherwise pay a fee every `RESEND` forever).
const MAX_TRIES: u32 = 3;

pub struct BeaconSigner {
    signer: Arc<Signer>,
    share: Vec<u8>,
    index: u32,
    chain: Hash256,
    /// Round -> (last submission, submissions so far).
    sent: Mutex<HashMap<u64, (Instant, u32)>>,
    /// Partials this signer submitted (for status pages and tests).
    pub signed: std::sync::atomic::AtomicU64,
}

impl BeaconSigner {
    /// `share` is this validator's encoded beacon share; `chain` the chain id it signs for.
    pub fn new(signer: Arc<Signer>, share: Vec<u8>, chain: Hash256) -> Result<Self> {
        let index = deai_ledger::state::beacon_share_index(&share).map_err(anyhow::Error::msg)?;
        Ok(BeaconSigner {
            signer,
            share,
            index,
            chain,
            sent: Mutex::new(HashMap::new()),
            signed: 0.into(),
        })
    }

    /// Signs what is pending and not signed by this player yet; returns how many partials it
    /// submitted.
    pub async fn tick(&self) -> Result<usize> {
        let Some(b) = self.signer.ledger().beacon().await? else {
            return Ok(0);
        };
        let me = self.signer.address();
        if b.players.get(self.index as usize) != Some(&me) {
            bail!(
                "this beacon share (index {}) is not {}'s on this chain",
                self.index,
                hex::encode(me)
            );
        }
        let mut n = 0;
        let b_pending: Vec<u64> = b.pending.iter().map(|p| p.round).collect();
        for p in b.pending {
            if p.signed.contains(&self.index) {
                continue;
            }
            let (recent, tries) = self
                .sent
                .lock()
                .unwrap()
                .get(&p.round)
                .map_or((false, 0), |(t, n)| (t.elapsed() < RESEND, *n));
            if recent || tries >= MAX_TRIES {
                if tries == MAX_TRIES {
                    tracing::warn!(round = p.round, "beacon partial refused {tries} times");
                    self.sent
                        .lock()
                        .unwrap()
                        .insert(p.round, (Instant::now(), tries + 1));
                }
                continue;
            }
            let signature = deai_ledger::state::sign_beacon(&self.share, &self.chain, p.round)
                .map_err(anyhow::Error::msg)?;
            self.signer
                .submit(TxKind::BeaconShare {
                    round: p.round,
                    signature,
                })
                .await?;
            self.sent
                .lock()
                .unwrap()
                .insert(p.round, (Instant::now(), tries + 1));
            self.signed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            n += 1;
        }
        // Forget rounds no longer pending.
        let pending: std::collections::HashSet<u64> = b_pending.iter().copied().collect();
        self.sent.lock().unwrap().retain(|r, _| pending.contains(r));
        Ok(n)
    }

    /// Runs until the process ends, checking every `every`.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("beacon: {e:#}");
            }
            tokio::time::sleep(every).await;
        }
    }
}
