//! What a gateway is started with: the models it offers, the API keys it accepts and how
//! hard it tries a request.

use deai_client::Signer;
use deai_engine::tokenizer::Tokenizer;
use deai_ledger::Address;
use deai_types::Hash256;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Who pays for a request, and who brought it.
#[derive(Clone)]
pub struct Payer {
    /// Signs the escrow: the client's own account (a custodial API key) or the gateway's.
    pub signer: Arc<Signer>,
    /// The client whose allowance the gateway spends (a non-custodial API key).
    pub client: Option<Address>,
    /// The app that brought the request (the `X-Deai-App` header): its owner earns the
    /// app's fee on top of the job's cost.
    pub app: Option<Hash256>,
}

impl Payer {
    /// The account the escrow comes from.
    pub fn account(&self) -> Address {
        self.client.unwrap_or_else(|| self.signer.address())
    }

    /// What the app's and the gateway's fees may add on top of a job's cost, as far as
    /// the escrow must leave room for them ([`deai_ledger::state::max_surcharge_bps`]).
    pub fn surcharge_bps(&self) -> u64 {
        if self.app.is_some() || self.client.is_some() {
            deai_ledger::state::max_surcharge_bps()
        } else {
            0
        }
    }
}

/// A model the gateway offers: its public name, weights hash and tokenizer.
#[derive(Clone)]
pub struct CatalogEntry {
    pub name: String,
    pub id: Hash256,
    pub tokenizer: Arc<Tokenizer>,
    pub n_ctx: usize,
}

pub struct GatewayConfig {
    pub models: Vec<CatalogEntry>,
    /// API key -> the ledger account that pays for its requests (a custodial key: the
    /// gateway holds the account's key).
    pub api_keys: Vec<(String, Arc<Signer>)>,
    /// API key -> a client that keeps its own key and authorized this gateway on chain
    /// (`Authorize`): the gateway signs its escrows with `signer`, within the allowance,
    /// and earns the gateway fee.
    pub client_keys: Vec<(String, Address)>,
    /// The gateway's own account (needed for `client_keys`).
    pub signer: Option<Arc<Signer>>,
    /// Workers tried per request before giving up.
    pub attempts: usize,
    /// Longest silence from a worker before it counts as failed.
    pub worker_timeout: Duration,
    /// Receipts relayed by this gateway are kept under `dir/receipts/`.
    pub dir: PathBuf,
    /// Route only to workers with at least one accepted job on chain (their capability
    /// challenge, see `verifier`).
    pub require_qualified: bool,
}
