//! What a gateway and a worker say to each other over HTTP (JSON): the job to run, with the
//! client's signed `OpenJob` transaction as proof of escrow, and the worker's stream of
//! newline-delimited events back.

use deai_engine::sampler::TokenLogprobs;
use deai_engine::{GenParams, StopReason};
use deai_ledger::SignedTx;
use deai_proof::JobSpec;
use deai_types::Hash256;
use serde::{Deserialize, Serialize};

/// `POST /worker/v1/run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRequest {
    pub model_id: Hash256,
    pub prompt_tokens: Vec<u32>,
    pub params: GenParams,
    #[serde(with = "deai_ledger::tx::hex_addr")]
    pub nonce: [u8; 32],
    /// The client's signed `OpenJob` for this job (id = hash of the fields above): the
    /// worker checks it and submits it too, so escrow does not depend on one relay.
    pub open_job: SignedTx,
    /// Report each output token's log-probability and this many alternatives (0..=20).
    /// Not part of the job: it changes no token, only what the stream carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
}

impl RunRequest {
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            model_id: self.model_id,
            prompt_tokens: self.prompt_tokens.clone(),
            params: self.params.clone(),
            nonce: self.nonce,
        }
    }

    pub fn job_id(&self) -> Hash256 {
        Hash256(self.spec().id())
    }
}

/// One line of the worker's response stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// One more output token.
    Token {
        token: u32,
        /// The text that became final with it, as the worker says. Informational only: the
        /// gateway ignores it and derives every piece of text from the token ids (which the
        /// receipt signs); kept for compatibility.
        text: String,
        /// When the request asked for them ([`RunRequest::top_logprobs`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprobs: Option<TokenLogprobs>,
    },
    /// The run is over; the receipt is stored and will be posted on chain.
    Done {
        job: Hash256,
        stop_reason: StopReason,
        prompt_tokens: usize,
        output_tokens: usize,
        /// The receipt's JSON view (what `deai verify` reads).
        receipt: serde_json::Value,
        /// SHA-256 of the receipt's canonical bytes, as posted on chain.
        receipt_digest: Hash256,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_logprobs_cross_the_wire_even_at_the_floor() {
        // The engine reports impossible tokens at the floor, never infinity: JSON has no
        // infinity, and a figure that did not round-trip would fail the whole attempt.
        let logits = [f32::NAN, 1.0, f32::NEG_INFINITY, 0.5];
        let lp = deai_engine::sampler::logprobs(&logits, 2, 4);
        assert_eq!(lp.logprob, deai_engine::sampler::LOGPROB_FLOOR);
        let ev = RunEvent::Token {
            token: 2,
            text: "x".into(),
            logprobs: Some(lp.clone()),
        };
        let line = serde_json::to_string(&ev).unwrap();
        match serde_json::from_str::<RunEvent>(&line).unwrap() {
            RunEvent::Token { logprobs, .. } => assert_eq!(logprobs, Some(lp)),
            other => panic!("{other:?}"),
        }
        // A worker that sends none (a stop token, or no logprobs asked) leaves the field out.
        let plain = RunEvent::Token {
            token: 2,
            text: String::new(),
            logprobs: None,
        };
        let line = serde_json::to_string(&plain).unwrap();
        assert!(!line.contains("logprobs"), "{line}");
        assert!(matches!(
            serde_json::from_str::<RunEvent>(r#"{"type":"token","token":1,"text":"a"}"#).unwrap(),
            RunEvent::Token { logprobs: None, .. }
        ));
    }
}
