//! Tampering helpers for tests and `deai bench proof`: the moves of a cheating worker who
//! edits a receipt and then makes it self-consistent again (commitments, job id, optionally a
//! proof rebuilt from an honest prefill of the edited tokens) and re-signs it with its own key,
//! so that only the content checks can catch the edit.

use crate::activation;
use crate::receipt::{self, Receipt};
use deai_engine::Engine;
use ed25519_dalek::SigningKey;

/// Recompute commitments and the job id, rebuild the activation proof on `rebuild_on` (if
/// given) and re-sign with `key`.
pub fn reseal(
    r: &mut Receipt,
    rebuild_on: Option<&Engine>,
    key: &SigningKey,
) -> Result<(), String> {
    r.prompt_commitment = receipt::prompt_commitment(&r.prompt_tokens);
    r.output_commitment = receipt::output_commitment(&r.output_tokens);
    r.job_id = receipt::job_id(&r.model_id, &r.prompt_tokens, &r.gen_params(), &r.job_nonce);
    if let Some(e) = rebuild_on {
        let n = r.output_tokens.len();
        let p = r.prompt_tokens.len();
        if n == 0 || p == 0 {
            return Err("empty prompt or output".into());
        }
        let mut fed = r.prompt_tokens.clone();
        fed.extend_from_slice(&r.output_tokens[..n - 1]);
        let o = e
            .prefill_all(&fed, fed.len() - 1)
            .map_err(|e| e.to_string())?;
        let d = e.model.cfg.d_model;
        let rows = activation::output_rows(&o.hidden, d, p, n).ok_or("rows")?;
        r.proof = activation::build(&r.job_id, rows, d, r.proof.chunk_size, r.proof.top_k)
            .ok_or("proof")?;
    }
    r.sign(key).map_err(|e| e.to_string())
}
