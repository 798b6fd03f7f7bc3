//! Receipts v1 and v2: the signed record of one run, its canonical binary encoding and its JSON view.
//!
//! The byte layout is specified in `docs/receipt.md`. Encoding uses the workspace's canonical
//! codec ([`deai_types::codec`]): versioned, little-endian, length-prefixed, with explicit
//! maximum sizes. [`Receipt::decode`] rejects truncated input, trailing bytes, unknown
//! versions, oversized lengths and non-canonical forms, and never panics. The digest posted on
//! chain for a receipt ([`receipt_digest`], [`Receipt::digest`]) is defined here too.

use crate::activation::{self, ActivationProof, ChunkProof};
use deai_engine::json_schema::{self, JsonSchema};
use deai_engine::{sampler, GenParams, SamplingParams, StopReason};
use deai_types::codec::{self, Reader, Writer};
use deai_types::Hash256;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// First bytes of every encoded receipt.
pub const MAGIC: &[u8; 4] = b"DRCP";
/// The receipt of a run whose sampler adjusts no logits.
pub const VERSION: u16 = 1;
/// The receipt of a run whose sampler adjusts logits (`logit_bias`, penalties, the JSON-object
/// grammar): v1 plus those settings after `seed`.
pub const VERSION_ADJUSTED: u16 = 2;

/// The version a receipt for `sampling` is written in: each run has exactly one encoding.
pub fn version_for(sampling: &SamplingParams) -> u16 {
    if sampling.adjusts_logits() {
        VERSION_ADJUSTED
    } else {
        VERSION
    }
}
/// Largest prompt and output, in tokens.
pub const MAX_TOKENS: usize = 1 << 16;
pub const MAX_PROFILE_ID: usize = 64;
pub const MAX_PROFILE_DETAIL: usize = 256;
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_LEN: usize = 256;
/// Largest encoded receipt (prompt + output at their maxima plus the proof, with room).
pub const MAX_RECEIPT_BYTES: usize = 1 << 20;

/// Why bytes are not a valid receipt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: {0} needs more bytes")]
    Truncated(&'static str),
    #[error("not a deai receipt (bad magic)")]
    BadMagic,
    #[error("unknown receipt version {0}")]
    UnknownVersion(u16),
    #[error("{what}: length {len} is outside {min}..={max}")]
    Length {
        what: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("non-canonical {0}")]
    NonCanonical(String),
    #[error("{0} trailing bytes after the receipt")]
    TrailingBytes(usize),
    #[error("receipt is {0} bytes, more than the {MAX_RECEIPT_BYTES}-byte limit")]
    TooLarge(usize),
}

/// The digest a worker posts on chain for canonical receipt bytes (what validators and
/// `deai verify --onchain` compare with the chain's record).
pub fn receipt_digest(receipt_bytes: &[u8]) -> Hash256 {
    Hash256::digest_parts("deai-receipt-v1", &[receipt_bytes])
}

/// Timings reported by the worker (informational; signed but not verifiable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub prefill_us: u64,
    pub decode_us: u64,
    pub proof_us: u64,
}

/// What was asked: the job id is the hash of all of it, so a proof cannot be moved onto
/// another job without changing the id.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub model_id: Hash256,
    pub prompt_tokens: Vec<u32>,
    pub params: GenParams,
    /// Requester's randomness: two jobs with equal content still get distinct ids.
    pub nonce: [u8; 32],
}

fn tokens_le(tokens: &[u32]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// SHA-256 commitment to prompt token ids (domain-separated, length-prefixed).
pub fn prompt_commitment(tokens: &[u32]) -> [u8; 32] {
    Hash256::digest_parts("deai-prompt-tokens-v1", &[&tokens_le(tokens)]).0
}

/// SHA-256 commitment to output token ids (domain-separated, length-prefixed).
pub fn output_commitment(tokens: &[u32]) -> [u8; 32] {
    Hash256::digest_parts("deai-output-tokens-v1", &[&tokens_le(tokens)]).0
}

/// The job id of a request.
pub fn job_id(
    model_id: &Hash256,
    prompt_tokens: &[u32],
    params: &GenParams,
    nonce: &[u8; 32],
) -> [u8; 32] {
    let s = &params.sampling;
    let mut stops = Vec::new();
    for st in &params.stop {
        stops.extend_from_slice(&(st.len() as u64).to_le_bytes());
        stops.extend_from_slice(st.as_bytes());
    }
    let temperature = s.temperature.to_bits().to_le_bytes();
    let top_k = (s.top_k as u64).to_le_bytes();
    let top_p = s.top_p.to_bits().to_le_bytes();
    let seed = s.seed.to_le_bytes();
    let max_tokens = (params.max_tokens as u64).to_le_bytes();
    let n_stops = (params.stop.len() as u64).to_le_bytes();
    let prompt = prompt_commitment(prompt_tokens);
    let mut parts: Vec<&[u8]> = vec![
        model_id.as_bytes(),
        &prompt,
        &temperature,
        &top_k,
        &top_p,
        &seed,
        &max_tokens,
        &n_stops,
        &stops,
        nonce,
    ];
    if !s.adjusts_logits() {
        return Hash256::digest_parts("deai-job-v1", &parts).0;
    }
    // v2 (logit adjustments): the same parts, then the penalties' bits, the bias list and the
    // output grammar.
    let penalties: Vec<u8> = [s.presence_penalty, s.frequency_penalty]
        .iter()
        .flat_map(|x| x.to_bits().to_le_bytes())
        .collect();
    let bias: Vec<u8> = s
        .logit_bias
        .iter()
        .flat_map(|(t, b)| t.to_le_bytes().into_iter().chain(b.to_bits().to_le_bytes()))
        .collect();
    let grammar = grammar_bytes(s);
    parts.push(&penalties);
    parts.push(&bias);
    parts.push(&grammar);
    Hash256::digest_parts("deai-job-v2", &parts).0
}

/// The output grammar as receipts and job ids write it: `0` none, `1` one JSON object, `2` then
/// the schema's canonical text (u16 length, bytes).
fn grammar_bytes(s: &SamplingParams) -> Vec<u8> {
    match &s.json_schema {
        Some(schema) => {
            let text = schema.canonical().as_bytes();
            let mut out = vec![2];
            // At most `MAX_SCHEMA_BYTES` (16384): a u16 holds it.
            const _: () = assert!(json_schema::MAX_SCHEMA_BYTES <= u16::MAX as usize);
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text);
            out
        }
        None => vec![u8::from(s.json_object)],
    }
}

impl JobSpec {
    pub fn id(&self) -> [u8; 32] {
        job_id(
            &self.model_id,
            &self.prompt_tokens,
            &self.params,
            &self.nonce,
        )
    }
}

/// One run, signed by the worker. The receipt carries the prompt and output token ids
/// themselves (the verifier needs them to re-run; they are small) and the commitments bind
/// them for records that keep only the hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u16,
    #[serde(with = "crate::hexser")]
    pub job_id: [u8; 32],
    #[serde(with = "crate::hexser")]
    pub job_nonce: [u8; 32],
    pub model_id: Hash256,
    /// Kernel profile id (equal ids promise equal bits).
    pub profile_id: String,
    /// Informational: engine version and instruction set.
    pub profile_detail: String,
    pub prompt_tokens: Vec<u32>,
    #[serde(with = "crate::hexser")]
    pub prompt_commitment: [u8; 32],
    /// Sampled tokens, including a final stop token.
    pub output_tokens: Vec<u32>,
    #[serde(with = "crate::hexser")]
    pub output_commitment: [u8; 32],
    pub sampling: SamplingParams,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub stop_reason: StopReason,
    pub proof: ActivationProof,
    pub timings: Timings,
    #[serde(with = "crate::hexser")]
    pub worker_key: [u8; 32],
    #[serde(with = "crate::hexser")]
    pub signature: [u8; 64],
}

impl From<codec::DecodeError> for DecodeError {
    fn from(e: codec::DecodeError) -> Self {
        match e {
            codec::DecodeError::Truncated(what) => DecodeError::Truncated(what),
            codec::DecodeError::Length {
                what,
                len,
                min,
                max,
            } => DecodeError::Length {
                what,
                len,
                min,
                max,
            },
            codec::DecodeError::UnknownTag { what, tag } => {
                DecodeError::NonCanonical(format!("{what} {tag}"))
            }
            codec::DecodeError::Trailing(n) => DecodeError::TrailingBytes(n),
            codec::DecodeError::NonCanonical(s) => DecodeError::NonCanonical(s),
        }
    }
}

/// A string with a u16 length prefix (saturated; the decoder refuses what does not fit).
fn write_str16(w: &mut Writer, s: &str) {
    w.u16(s.len().min(u16::MAX as usize) as u16);
    w.raw(s.as_bytes());
}

/// Token ids with a u32 count prefix.
fn write_tokens(w: &mut Writer, t: &[u32]) {
    w.u32(t.len().min(u32::MAX as usize) as u32);
    for x in t {
        w.u32(*x);
    }
}

/// `len` if it lies in `min..=max`.
fn check_len(len: usize, what: &'static str, min: usize, max: usize) -> Result<usize, DecodeError> {
    if len < min || len > max {
        return Err(DecodeError::Length {
            what,
            len,
            min,
            max,
        });
    }
    Ok(len)
}

/// A UTF-8 string with a u16 length prefix in `min..=max`.
fn read_str16(
    r: &mut Reader,
    what: &'static str,
    min: usize,
    max: usize,
) -> Result<String, DecodeError> {
    let n = check_len(r.u16(what)? as usize, what, min, max)?;
    let b = r.raw(n, what)?;
    String::from_utf8(b.to_vec())
        .map_err(|_| DecodeError::NonCanonical(format!("{what}: not UTF-8")))
}

/// Token ids with a u32 count prefix in `1..=MAX_TOKENS`.
fn read_tokens(r: &mut Reader, what: &'static str) -> Result<Vec<u32>, DecodeError> {
    let n = check_len(r.u32(what)? as usize, what, 1, MAX_TOKENS)?;
    let b = r.raw(n * 4, what)?;
    Ok(b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A version-2 receipt's logit adjustments (after `seed`), in canonical form: finite values in
/// range, no `-0.0`, bias ids strictly ascending, the output grammar 0 (none), 1 (one JSON
/// object) or 2 (a JSON schema, then its canonical text), and at least one adjustment (a run without any has a version-1 receipt).
fn decode_adjustments(r: &mut Reader, s: &mut SamplingParams) -> Result<(), DecodeError> {
    let value = |r: &mut Reader, what: &'static str, max: f32| -> Result<f32, DecodeError> {
        let v = f32::from_bits(r.u32(what)?);
        if !(-max..=max).contains(&v) || v.to_bits() == 1 << 31 {
            return Err(DecodeError::NonCanonical(format!("{what} {v}")));
        }
        Ok(v)
    };
    s.presence_penalty = value(r, "presence penalty", sampler::MAX_PENALTY)?;
    s.frequency_penalty = value(r, "frequency penalty", sampler::MAX_PENALTY)?;
    let n = r.u16("logit bias count")? as usize;
    check_len(n, "logit bias count", 0, sampler::MAX_LOGIT_BIAS)?;
    s.logit_bias.reserve(n);
    for _ in 0..n {
        let t = r.u32("logit bias token")?;
        if s.logit_bias.last().is_some_and(|&(prev, _)| prev >= t) {
            return Err(DecodeError::NonCanonical(
                "logit bias token ids not strictly ascending".into(),
            ));
        }
        let b = value(r, "logit bias", sampler::MAX_BIAS)?;
        s.logit_bias.push((t, b));
    }
    match r.u8("output grammar")? {
        0 => {}
        1 => s.json_object = true,
        2 => {
            let text = read_str16(r, "output schema", 1, json_schema::MAX_SCHEMA_BYTES)?;
            s.json_schema = Some(
                JsonSchema::from_canonical(&text)
                    .map_err(|e| DecodeError::NonCanonical(format!("output schema: {e}")))?,
            );
        }
        x => return Err(DecodeError::NonCanonical(format!("output grammar {x}"))),
    }
    if !s.adjusts_logits() {
        return Err(DecodeError::NonCanonical(
            "version 2 receipt without logit adjustments (that is version 1)".into(),
        ));
    }
    Ok(())
}

fn stop_code(r: StopReason) -> u8 {
    match r {
        StopReason::Eos => 0,
        StopReason::StopString => 1,
        StopReason::MaxTokens => 2,
    }
}

impl Receipt {
    fn encode_body(&self, w: &mut Writer) {
        w.raw(MAGIC);
        w.u16(self.version);
        w.raw(&self.job_id);
        w.raw(&self.job_nonce);
        w.raw(self.model_id.as_bytes());
        write_str16(w, &self.profile_id);
        write_str16(w, &self.profile_detail);
        write_tokens(w, &self.prompt_tokens);
        w.raw(&self.prompt_commitment);
        write_tokens(w, &self.output_tokens);
        w.raw(&self.output_commitment);
        let s = &self.sampling;
        w.u32(s.temperature.to_bits());
        w.u32(s.top_k.min(u32::MAX as usize) as u32);
        w.u32(s.top_p.to_bits());
        w.u64(s.seed);
        if self.version == VERSION_ADJUSTED {
            w.u32(s.presence_penalty.to_bits());
            w.u32(s.frequency_penalty.to_bits());
            w.u16(s.logit_bias.len().min(u16::MAX as usize) as u16);
            for (t, b) in &s.logit_bias {
                w.u32(*t);
                w.u32(b.to_bits());
            }
            w.raw(&grammar_bytes(s));
        }
        w.u32(self.max_tokens);
        w.u8(self.stop.len().min(255) as u8);
        for st in &self.stop {
            write_str16(w, st);
        }
        w.u8(stop_code(self.stop_reason));
        w.u16(self.proof.chunk_size);
        w.u16(self.proof.top_k);
        for c in &self.proof.chunks {
            w.u16(c.m);
            for x in &c.coeffs {
                w.u16(*x);
            }
            w.raw(&c.digest);
        }
        w.u64(self.timings.prefill_us);
        w.u64(self.timings.decode_us);
        w.u64(self.timings.proof_us);
        w.raw(&self.worker_key);
    }

    /// The bytes the signature covers: the canonical encoding without the signature. Errors
    /// when a field is out of the format's range (such a receipt cannot be signed or sent).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        let b = self.to_bytes()?;
        Ok(b[..b.len() - 64].to_vec())
    }

    /// Canonical encoding. Fails if the receipt would not decode back to itself (a field out
    /// of range, a proof whose shape does not match the output length, ...).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        let mut w = Writer::new();
        self.encode_body(&mut w);
        w.raw(&self.signature);
        let b = w.into_bytes();
        let back = Receipt::decode(&b)?;
        if back != *self {
            return Err(DecodeError::NonCanonical(
                "receipt fields do not survive encoding".into(),
            ));
        }
        Ok(b)
    }

    /// The digest posted on chain for this receipt: [`receipt_digest`] of its canonical bytes.
    pub fn digest(&self) -> Result<Hash256, DecodeError> {
        Ok(receipt_digest(&self.to_bytes()?))
    }

    /// Decode canonical bytes.
    pub fn decode(b: &[u8]) -> Result<Receipt, DecodeError> {
        if b.len() > MAX_RECEIPT_BYTES {
            return Err(DecodeError::TooLarge(b.len()));
        }
        let mut r = Reader::new(b);
        if r.raw(4, "magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16("version")?;
        if version != VERSION && version != VERSION_ADJUSTED {
            return Err(DecodeError::UnknownVersion(version));
        }
        let job_id = r.arr("job id")?;
        let job_nonce = r.arr("job nonce")?;
        let model_id = Hash256(r.arr("model id")?);
        let profile_id = read_str16(&mut r, "profile id", 1, MAX_PROFILE_ID)?;
        let profile_detail = read_str16(&mut r, "profile detail", 0, MAX_PROFILE_DETAIL)?;
        let prompt_tokens = read_tokens(&mut r, "prompt tokens")?;
        let prompt_commitment = r.arr("prompt commitment")?;
        let output_tokens = read_tokens(&mut r, "output tokens")?;
        let output_commitment = r.arr("output commitment")?;
        let temperature = f32::from_bits(r.u32("temperature")?);
        if !(temperature.is_finite() && temperature >= 0.0) || temperature.to_bits() == 1 << 31 {
            return Err(DecodeError::NonCanonical(format!(
                "temperature {temperature}"
            )));
        }
        let top_k = r.u32("top_k")? as usize;
        let top_p = f32::from_bits(r.u32("top_p")?);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(DecodeError::NonCanonical(format!("top_p {top_p}")));
        }
        let seed = r.u64("seed")?;
        let mut sampling = SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..Default::default()
        };
        if version == VERSION_ADJUSTED {
            decode_adjustments(&mut r, &mut sampling)?;
        }
        let max_tokens = r.u32("max_tokens")?;
        check_len(max_tokens as usize, "max_tokens", 1, MAX_TOKENS)?;
        let n_stop = r.u8("stop count")? as usize;
        check_len(n_stop, "stop count", 0, MAX_STOPS)?;
        let mut stop = Vec::with_capacity(n_stop);
        for _ in 0..n_stop {
            stop.push(read_str16(&mut r, "stop string", 1, MAX_STOP_LEN)?);
        }
        let stop_reason = match r.u8("stop reason")? {
            0 => StopReason::Eos,
            1 => StopReason::StopString,
            2 => StopReason::MaxTokens,
            x => return Err(DecodeError::NonCanonical(format!("stop reason {x}"))),
        };
        let chunk_size = r.u16("chunk size")?;
        check_len(
            chunk_size as usize,
            "chunk size",
            1,
            activation::MAX_CHUNK as usize,
        )?;
        let top_k_proof = r.u16("proof top-k")?;
        check_len(
            top_k_proof as usize,
            "proof top-k",
            activation::MIN_K as usize,
            activation::MAX_TOP_K as usize,
        )?;
        let n = output_tokens.len();
        let n_chunks = activation::n_chunks(n, chunk_size);
        let mut chunks = Vec::with_capacity(n_chunks);
        for j in 0..n_chunks {
            let rows = (n - j * chunk_size as usize).min(chunk_size as usize);
            let k = activation::k_for(rows, chunk_size, top_k_proof);
            let m = r.u16("chunk modulus")?;
            check_len(m as usize, "chunk modulus", k, activation::P as usize)?;
            let mut coeffs = Vec::with_capacity(k);
            for _ in 0..k {
                let c = r.u16("chunk coefficient")?;
                if c as u32 >= activation::P {
                    return Err(DecodeError::NonCanonical(format!(
                        "coefficient {c} >= field prime"
                    )));
                }
                coeffs.push(c);
            }
            let digest = r.arr("chunk digest")?;
            chunks.push(ChunkProof { m, coeffs, digest });
        }
        let timings = Timings {
            prefill_us: r.u64("timings")?,
            decode_us: r.u64("timings")?,
            proof_us: r.u64("timings")?,
        };
        let worker_key = r.arr("worker key")?;
        let signature = r.arr("signature")?;
        r.finish()?;
        Ok(Receipt {
            version,
            job_id,
            job_nonce,
            model_id,
            profile_id,
            profile_detail,
            prompt_tokens,
            prompt_commitment,
            output_tokens,
            output_commitment,
            sampling,
            max_tokens,
            stop,
            stop_reason,
            proof: ActivationProof {
                chunk_size,
                top_k: top_k_proof,
                chunks,
            },
            timings,
            worker_key,
            signature,
        })
    }

    /// Sign (sets `worker_key` and `signature`).
    pub fn sign(&mut self, key: &SigningKey) -> Result<(), DecodeError> {
        self.worker_key = key.verifying_key().to_bytes();
        self.signature = [0u8; 64];
        let msg = self.signing_bytes()?;
        self.signature = key.sign(&msg).to_bytes();
        Ok(())
    }

    /// Check the signature over the re-derived canonical bytes.
    pub fn verify_signature(&self) -> Result<(), String> {
        let msg = self.signing_bytes().map_err(|e| e.to_string())?;
        let vk = VerifyingKey::from_bytes(&self.worker_key)
            .map_err(|e| format!("bad worker key: {e}"))?;
        let sig = Signature::from_bytes(&self.signature);
        vk.verify_strict(&msg, &sig)
            .map_err(|e| format!("signature does not verify: {e}"))
    }

    /// The generation parameters recorded in the receipt.
    pub fn gen_params(&self) -> GenParams {
        GenParams {
            max_tokens: self.max_tokens as usize,
            sampling: self.sampling.clone(),
            stop: self.stop.clone(),
        }
    }

    /// The JSON view (what `out.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse the JSON view. The canonical bytes are re-derived from the fields, so a JSON file
    /// that does not map to a canonical receipt is an error.
    pub fn from_json(s: &str) -> Result<Receipt, String> {
        let r: Receipt = serde_json::from_str(s).map_err(|e| format!("receipt JSON: {e}"))?;
        r.to_bytes().map_err(|e| format!("receipt: {e}"))?;
        Ok(r)
    }
}
