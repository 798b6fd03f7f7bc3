//! What a gateway is started with: the models it offers, the API keys it accepts and how
//! hard it tries a request.

use deai_client::Signer;
use deai_engine::tokenizer::Tokenizer;
use deai_types::Hash256;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// API key -> the ledger account that pays for its requests.
    pub api_keys: Vec<(String, Arc<Signer>)>,
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
