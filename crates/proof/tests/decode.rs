//! The receipt decoder: canonical round trips, and errors (never panics) on malformed,
//! truncated, oversized, unknown-version, non-canonical and trailing input.

use deai_engine::{SamplingParams, StopReason};
use deai_proof::activation::{self, ActivationProof, ChunkProof};
use deai_proof::receipt::{DecodeError, Receipt, MAX_RECEIPT_BYTES};
use deai_proof::{SigningKey, Timings};
use deai_types::Hash256;
use proptest::prelude::*;

fn receipt(
    prompt: Vec<u32>,
    output: Vec<u32>,
    chunk: u16,
    top_k: u16,
    stop: Vec<String>,
    seed: u64,
) -> Receipt {
    let chunks = (0..activation::n_chunks(output.len(), chunk))
        .map(|j| {
            let rows = (output.len() - j * chunk as usize).min(chunk as usize);
            let k = activation::k_for(rows, chunk, top_k);
            ChunkProof {
                m: 65000,
                coeffs: (0..k)
                    .map(|i| ((i as u64 * 7919 + seed) % 65521) as u16)
                    .collect(),
                digest: [j as u8; 8],
            }
        })
        .collect();
    let mut r = Receipt {
        version: 1,
        job_id: [1; 32],
        job_nonce: [2; 32],
        model_id: Hash256::digest(b"m"),
        profile_id: "deai-cpu-bi-v1".into(),
        profile_detail: "deai-cpu-bi-v1/0.1.0/avx2".into(),
        prompt_commitment: deai_proof::receipt::prompt_commitment(&prompt),
        prompt_tokens: prompt,
        output_commitment: deai_proof::receipt::output_commitment(&output),
        max_tokens: output.len() as u32,
        output_tokens: output,
        sampling: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            seed,
            ..Default::default()
        },
        stop,
        stop_reason: StopReason::MaxTokens,
        proof: ActivationProof {
            chunk_size: chunk,
            top_k,
            chunks,
        },
        timings: Timings {
            prefill_us: 1,
            decode_us: 2,
            proof_us: 3,
        },
        worker_key: [0; 32],
        signature: [0; 64],
    };
    r.sign(&SigningKey::from_bytes(&[5; 32])).unwrap();
    r
}

fn sample() -> Vec<u8> {
    receipt(
        vec![1, 2, 3],
        (0..40).collect(),
        32,
        120,
        vec!["END".into()],
        9,
    )
    .to_bytes()
    .unwrap()
}

#[test]
fn roundtrip_and_signature() {
    let b = sample();
    let r = Receipt::decode(&b).unwrap();
    assert_eq!(r.to_bytes().unwrap(), b);
    r.verify_signature().unwrap();
    assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
}

#[test]
fn every_truncation_is_an_error() {
    let b = sample();
    for n in 0..b.len() {
        assert!(Receipt::decode(&b[..n]).is_err(), "prefix {n} decoded");
    }
}

#[test]
fn trailing_bytes_version_magic_and_size() {
    let mut b = sample();
    b.push(0);
    assert_eq!(Receipt::decode(&b), Err(DecodeError::TrailingBytes(1)));
    let mut b = sample();
    b[4] = 3;
    assert_eq!(Receipt::decode(&b), Err(DecodeError::UnknownVersion(3)));
    let mut b = sample();
    b[0] = b'X';
    assert_eq!(Receipt::decode(&b), Err(DecodeError::BadMagic));
    let big = vec![0u8; MAX_RECEIPT_BYTES + 1];
    assert!(matches!(
        Receipt::decode(&big),
        Err(DecodeError::TooLarge(_))
    ));
}

/// Offset of the prompt token count in the sample (magic, version, 3 ids, 2 strings).
fn prompt_count_at() -> usize {
    4 + 2 + 96 + 2 + "deai-cpu-bi-v1".len() + 2 + "deai-cpu-bi-v1/0.1.0/avx2".len()
}

#[test]
fn oversized_lengths_and_non_canonical_fields() {
    let at = prompt_count_at();
    let mut b = sample();
    b[at..at + 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(matches!(
        Receipt::decode(&b),
        Err(DecodeError::Length { .. })
    ));
    let mut b = sample();
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        Receipt::decode(&b),
        Err(DecodeError::Length { .. })
    ));
    // Temperature -0.0 and NaN.
    let temp_at = at + 4 + 12 + 32 + 4 + 160 + 32;
    let mut r = Receipt::decode(&sample()).unwrap();
    assert_eq!(
        f32::from_le_bytes(sample()[temp_at..temp_at + 4].try_into().unwrap()),
        0.7
    );
    for bad in [(-0.0f32).to_bits(), f32::NAN.to_bits(), (-1.0f32).to_bits()] {
        let mut b = sample();
        b[temp_at..temp_at + 4].copy_from_slice(&bad.to_le_bytes());
        assert!(matches!(
            Receipt::decode(&b),
            Err(DecodeError::NonCanonical(_))
        ));
    }
    // Fields that cannot be encoded canonically are refused by the encoder too.
    r.sampling.top_p = 0.0;
    assert!(r.to_bytes().is_err());
    let mut r = Receipt::decode(&sample()).unwrap();
    r.proof.chunks[0].coeffs[0] = 65521;
    assert!(r.to_bytes().is_err());
    let mut r = Receipt::decode(&sample()).unwrap();
    r.proof.chunks.pop();
    assert!(r.to_bytes().is_err());
    let mut r = Receipt::decode(&sample()).unwrap();
    r.stop.push(String::new());
    assert!(r.to_bytes().is_err());
}

/// Version 2 carries the logit adjustments after the seed; each run has one encoding.
#[test]
fn version_2_carries_logit_adjustments_canonically() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let mut r = Receipt::decode(&sample()).unwrap();
    r.sampling.presence_penalty = 0.5;
    r.sampling.frequency_penalty = -1.0;
    r.sampling.logit_bias = vec![(3, 2.5), (70_000, -100.0)];
    // Adjustments need version 2: the version-1 layout cannot hold them.
    assert!(r.sign(&key).is_err());
    r.version = deai_proof::receipt::version_for(&r.sampling);
    assert_eq!(r.version, 2);
    r.sign(&key).unwrap();
    let b = r.to_bytes().unwrap();
    assert_eq!(Receipt::decode(&b).unwrap(), r);
    assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
    r.verify_signature().unwrap();
    assert_eq!(b.len(), sample().len() + 4 + 4 + 2 + 2 * 8 + 1);
    for n in 0..b.len() {
        assert!(Receipt::decode(&b[..n]).is_err(), "prefix {n} decoded");
    }
    // After the seed: presence, frequency, the bias count, then (id, bias) pairs.
    let at = prompt_count_at() + 4 + 12 + 32 + 4 + 160 + 32 + 4 + 4 + 4 + 8;
    assert_eq!(&b[at..at + 4], &0.5f32.to_bits().to_le_bytes());
    let non_canonical = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut c = b.clone();
        edit(&mut c);
        assert!(
            matches!(Receipt::decode(&c), Err(DecodeError::NonCanonical(_))),
            "{:?}",
            Receipt::decode(&c)
        );
    };
    let put = |c: &mut Vec<u8>, at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    non_canonical(&|c| put(c, at, 2.5f32.to_bits()));
    non_canonical(&|c| put(c, at, (-0.0f32).to_bits()));
    non_canonical(&|c| put(c, at + 4, f32::NAN.to_bits()));
    // Ids not ascending; a bias out of range.
    non_canonical(&|c| put(c, at + 10, 80_000));
    non_canonical(&|c| put(c, at + 14, 100.5f32.to_bits()));
    // An output grammar other than none (0), one JSON object (1) or a schema (2).
    non_canonical(&|c| c[at + 26] = 3);
    let mut json = r.clone();
    json.sampling.json_object = true;
    json.sign(&key).unwrap();
    let jb = json.to_bytes().unwrap();
    assert_eq!(jb[at + 26], 1);
    assert_eq!(Receipt::decode(&jb).unwrap(), json);
    // A schema: grammar 2, then its canonical text, which must stay canonical.
    let mut schema = r.clone();
    let text = r#"{"type": "object", "properties": {"city": {"type": "string"}}}"#;
    schema.sampling.json_schema = Some(
        deai_engine::json_schema::JsonSchema::compile_object(&serde_json::from_str(text).unwrap())
            .unwrap(),
    );
    schema.sign(&key).unwrap();
    let sb = schema.to_bytes().unwrap();
    let canonical = br#"{"object":[["city","string"]]}"#;
    assert_eq!(sb[at + 26], 2);
    assert_eq!(
        &sb[at + 27..at + 29],
        &(canonical.len() as u16).to_le_bytes()
    );
    assert_eq!(&sb[at + 29..at + 29 + canonical.len()], canonical);
    assert_eq!(Receipt::decode(&sb).unwrap(), schema);
    assert_eq!(Receipt::from_json(&schema.to_json()).unwrap(), schema);
    let edit_schema = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut c = sb.clone();
        edit(&mut c);
        Receipt::decode(&c)
    };
    let s0 = at + 29;
    // Same length, other spelling ("String"), and not JSON at all.
    assert!(matches!(
        edit_schema(&|c| c[s0 + 19] = b'S'),
        Err(DecodeError::NonCanonical(_))
    ));
    assert!(matches!(
        edit_schema(&|c| c[s0] = b'['),
        Err(DecodeError::NonCanonical(_))
    ));
    // An empty or overlong schema text.
    assert!(matches!(
        edit_schema(&|c| c[at + 27..at + 29].copy_from_slice(&0u16.to_le_bytes())),
        Err(DecodeError::Length { .. })
    ));
    assert!(matches!(
        edit_schema(&|c| c[at + 27..at + 29].copy_from_slice(&20000u16.to_le_bytes())),
        Err(DecodeError::Length { .. })
    ));
    // Every truncation is an error.
    for n in 0..sb.len() {
        assert!(Receipt::decode(&sb[..n]).is_err());
    }
    // A count over the limit.
    let mut c = b.clone();
    c[at + 8..at + 10].copy_from_slice(&301u16.to_le_bytes());
    assert!(matches!(
        Receipt::decode(&c),
        Err(DecodeError::Length { .. })
    ));
    // Version 2 with nothing to adjust is version 1 written another way.
    let mut r2 = Receipt::decode(&sample()).unwrap();
    r2.version = 2;
    assert!(r2.sign(&key).is_err());
}

#[test]
fn bad_json_is_an_error() {
    assert!(Receipt::from_json("{}").is_err());
    assert!(Receipt::from_json("not json").is_err());
    let r = Receipt::decode(&sample()).unwrap();
    let j = r.to_json().replace(&hex::encode([1u8; 32]), "00");
    assert!(Receipt::from_json(&j).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip(prompt in prop::collection::vec(any::<u32>(), 1..50),
                 output in prop::collection::vec(any::<u32>(), 1..80),
                 chunk in 1u16..40, top_k in 8u16..200, seed in any::<u64>(),
                 stop in prop::collection::vec("[a-z]{1,8}", 0..4)) {
        let r = receipt(prompt, output, chunk, top_k, stop, seed);
        let b = r.to_bytes().unwrap();
        prop_assert_eq!(Receipt::decode(&b).unwrap(), r);
    }

    #[test]
    fn roundtrip_v2(output in prop::collection::vec(any::<u32>(), 1..40), seed in any::<u64>(),
                    presence in -2.0f32..=2.0, frequency in -2.0f32..=2.0, json in any::<bool>(),
                    bias in prop::collection::btree_map(any::<u32>(), -100.0f32..=100.0, 0..20)) {
        let mut r = receipt(vec![7, 8], output, 16, 64, vec![], seed);
        // Zero is written +0: the canonical form.
        r.sampling.presence_penalty = presence + 0.0;
        r.sampling.frequency_penalty = frequency + 0.0;
        r.sampling.logit_bias = bias.into_iter().map(|(t, b)| (t, b + 0.0)).collect();
        r.sampling.json_object = json;
        r.version = deai_proof::receipt::version_for(&r.sampling);
        r.sign(&SigningKey::from_bytes(&[5; 32])).unwrap();
        let b = r.to_bytes().unwrap();
        prop_assert_eq!(b[4], r.version as u8);
        prop_assert_eq!(Receipt::decode(&b).unwrap(), r.clone());
        prop_assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Receipt::decode(&b);
    }

    #[test]
    fn mutations_never_panic(i in any::<usize>(), v in any::<u8>()) {
        let mut b = sample();
        let n = b.len();
        b[i % n] = v;
        if let Ok(r) = Receipt::decode(&b) {
            prop_assert_eq!(r.to_bytes().unwrap(), b);
        }
    }
}

/// The encoding is frozen: a fixed v1 and v2 receipt encode to the same bytes, and digest to
/// the same on-chain value, as before receipts moved onto `deai_types::codec`.
#[test]
fn encoding_and_digest_are_frozen() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let b = sample();
    let mut r = Receipt::decode(&b).unwrap();
    assert_eq!(r.digest().unwrap(), deai_proof::receipt_digest(&b));
    r.sampling.presence_penalty = 0.5;
    r.sampling.logit_bias = vec![(3, 2.5), (70_000, -100.0)];
    let schema = r#"{"type": "object", "properties": {"city": {"type": "string"}}}"#;
    r.sampling.json_schema = Some(
        deai_engine::json_schema::JsonSchema::compile_object(
            &serde_json::from_str(schema).unwrap(),
        )
        .unwrap(),
    );
    r.version = 2;
    r.sign(&key).unwrap();
    let b2 = r.to_bytes().unwrap();
    assert_eq!(r.digest().unwrap(), deai_proof::receipt_digest(&b2));
    let golden = [
        (
            &b,
            864,
            "b52d6a7e79018b40f0042cbff1a6090146faa7120399b73096fdfd1cff00b6d2",
            "aec0668f8423f2f9b182f0fac459dd07c9f901d333dd00c7c657839a43919f96",
        ),
        (
            &b2,
            923,
            "e947e6eaaf28a6f46db15fec5d479d04ed17cecc0a1b1816d0ce5d042aa61e13",
            "1e13d65a871905f252278747966114acf099b8d29742b565921ea79e01d9d8a8",
        ),
    ];
    for (bytes, len, sha, digest) in golden {
        assert_eq!(bytes.len(), len);
        assert_eq!(Hash256::digest(bytes).to_hex(), sha);
        assert_eq!(deai_proof::receipt_digest(bytes).to_hex(), digest);
    }
}
