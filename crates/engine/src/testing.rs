//! Tiny generated llama models for tests, fuzzing and benchmarks: real GGUF files with random
//! weights and a byte-level vocabulary, small enough to run in milliseconds.

use crate::gguf::{write_gguf, TensorOut, WType};
use crate::quant::QMatrix;
use crate::tokenizer::byte_char;
use candle_core::quantized::gguf_file::Value;

#[derive(Clone, Debug)]
pub struct TinySpec {
    pub wtype: WType,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub d_ff: usize,
    pub n_ctx: usize,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            wtype: WType::Q4_1,
            n_layer: 2,
            d_model: 64,
            n_head: 4,
            n_kv_head: 2,
            d_ff: 128,
            n_ctx: 512,
            seed: 1,
        }
    }
}

/// Special tokens of the tiny vocabulary (ids 0, 1, 2, as in SmolLM2).
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Vocabulary: the 3 specials, then one token per byte, then a few merges' results.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3i32; SPECIALS.len()];
    for b in 0..=255u8 {
        tokens.push(byte_char(b).to_string());
        types.push(1);
    }
    let merges = ["h e", "l l", "he ll", "Ġ t"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (
        tokens,
        types,
        merges.iter().map(|m| m.to_string()).collect(),
    )
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Bytes of a GGUF file holding a random tiny llama model.
pub fn tiny_model_gguf(spec: &TinySpec) -> Vec<u8> {
    let (tokens, types, merges) = tiny_vocab();
    let vocab = tokens.len();
    let d = spec.d_model;
    let kv = d / spec.n_head * spec.n_kv_head;
    let s = |x: &str| Value::String(x.to_string());
    let u = |x: usize| Value::U32(x as u32);
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("general.name", s("deai-tiny")),
        ("llama.block_count", u(spec.n_layer)),
        ("llama.embedding_length", u(d)),
        ("llama.feed_forward_length", u(spec.d_ff)),
        ("llama.attention.head_count", u(spec.n_head)),
        ("llama.attention.head_count_kv", u(spec.n_kv_head)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", u(spec.n_ctx)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges", Value::Array(merges.iter().map(|m| s(m)).collect())),
        ("tokenizer.ggml.bos_token_id", u(1)),
        ("tokenizer.ggml.eos_token_id", u(2)),
        (
            "tokenizer.chat_template",
            s("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"),
        ),
    ];
    let mut rng = Lcg(spec.seed);
    let mut owned: Vec<(String, WType, Vec<usize>, Vec<u8>)> = vec![];
    let mut mat = |name: String, wt: WType, rows: usize, cols: usize, rng: &mut Lcg| {
        let x = rng.vec(rows * cols, 1.0 / (cols as f32).sqrt() * 1.7);
        let m = QMatrix::quantize(wt, rows, cols, &x).expect("tiny shapes are whole blocks");
        owned.push((name, wt, vec![rows, cols], m.data));
    };
    mat(
        "token_embd.weight".into(),
        WType::Q8_0.max_of(spec.wtype),
        vocab,
        d,
        &mut rng,
    );
    for i in 0..spec.n_layer {
        let w = spec.wtype;
        mat(format!("blk.{i}.attn_q.weight"), w, d, d, &mut rng);
        mat(format!("blk.{i}.attn_k.weight"), w, kv, d, &mut rng);
        mat(format!("blk.{i}.attn_v.weight"), w, kv, d, &mut rng);
        mat(format!("blk.{i}.attn_output.weight"), w, d, d, &mut rng);
        mat(
            format!("blk.{i}.ffn_gate.weight"),
            w,
            spec.d_ff,
            d,
            &mut rng,
        );
        mat(format!("blk.{i}.ffn_up.weight"), w, spec.d_ff, d, &mut rng);
        mat(
            format!("blk.{i}.ffn_down.weight"),
            w,
            d,
            spec.d_ff,
            &mut rng,
        );
    }
    let mut norm = |name: String, rng: &mut Lcg| {
        let x: Vec<f32> = (0..d).map(|_| 1.0 + 0.1 * rng.next()).collect();
        let data = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name, WType::F32, vec![d], data));
    };
    for i in 0..spec.n_layer {
        norm(format!("blk.{i}.attn_norm.weight"), &mut rng);
        norm(format!("blk.{i}.ffn_norm.weight"), &mut rng);
    }
    norm("output_norm.weight".into(), &mut rng);
    let tensors: Vec<TensorOut> = owned
        .iter()
        .map(|(n, t, dims, data)| TensorOut {
            name: n,
            wtype: *t,
            dims: dims.clone(),
            data,
        })
        .collect();
    write_gguf(&meta, &tensors).expect("tiny model serializes")
}

impl WType {
    /// The embedding type used by tiny models: Q8_0 for quantized models (as SmolLM2 ships),
    /// the model's own type for float models.
    fn max_of(self, model: WType) -> WType {
        if model.is_quantized() {
            self
        } else {
            model
        }
    }
}
