//! Checkpoints: safetensors files carrying the model config in their metadata and named by
//! the weights' content hash, and export to a GGUF file that the inference engine serves.

use crate::config::{ModelConfig, BYTE_OFFSET};
use crate::model::{Weights, RMS_EPS, ROPE_BASE};
use crate::{Result, TrainError};
use candle_core::quantized::gguf_file::Value;
use deai_engine::gguf::{write_gguf, TensorOut, WType};
use deai_types::Hash256;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Largest checkpoint accepted from a peer or disk (the `demo` preset is ~20 MB).
pub const MAX_CHECKPOINT_BYTES: usize = 1 << 30;

/// safetensors bytes of `w`; the metadata holds `deai.config` (JSON) and `deai.hash`.
pub fn to_safetensors(w: &Weights) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = w
        .tensors
        .iter()
        .map(|t| t.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = w
        .cfg
        .tensors()
        .into_iter()
        .zip(&bytes)
        .map(|((name, shape), b)| Ok((name, TensorView::new(Dtype::F32, shape, b)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| TrainError::Decode(format!("safetensors: {e}")))?;
    let meta = HashMap::from([
        (
            "deai.config".to_string(),
            serde_json::to_string(&w.cfg).expect("config serializes"),
        ),
        ("deai.hash".to_string(), w.hash().to_hex()),
    ]);
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| TrainError::Decode(format!("safetensors: {e}")))
}

/// Parses a checkpoint, checks every tensor's name, type and shape against its config, and,
/// with `expect`, that the weights hash to it.
pub fn from_safetensors(b: &[u8], expect: Option<Hash256>) -> Result<Weights> {
    if b.len() > MAX_CHECKPOINT_BYTES {
        return Err(TrainError::Decode(format!(
            "checkpoint of {} bytes exceeds the {MAX_CHECKPOINT_BYTES}-byte limit",
            b.len()
        )));
    }
    let bad = |e: safetensors::SafeTensorError| TrainError::Decode(format!("safetensors: {e}"));
    let (_, meta) = SafeTensors::read_metadata(b).map_err(bad)?;
    let cfg_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("deai.config"))
        .ok_or_else(|| TrainError::Decode("checkpoint has no deai.config metadata".into()))?;
    let cfg: ModelConfig = serde_json::from_str(cfg_json)
        .map_err(|e| TrainError::Decode(format!("checkpoint config: {e}")))?;
    cfg.validate()?;
    let st = SafeTensors::deserialize(b).map_err(bad)?;
    let layout = cfg.tensors();
    if st.len() != layout.len() {
        return Err(TrainError::Shape(format!(
            "checkpoint has {} tensors, its config needs {}",
            st.len(),
            layout.len()
        )));
    }
    let mut tensors = Vec::with_capacity(layout.len());
    for (name, shape) in &layout {
        let v = st
            .tensor(name)
            .map_err(|_| TrainError::Shape(format!("checkpoint lacks {name}")))?;
        if v.dtype() != Dtype::F32 || v.shape() != shape.as_slice() {
            return Err(TrainError::Shape(format!(
                "{name} is {:?} {:?}, expected F32 {shape:?}",
                v.dtype(),
                v.shape()
            )));
        }
        tensors.push(
            v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    let w = Weights { cfg, tensors };
    w.check()?;
    if let Some(want) = expect {
        let got = w.hash();
        if got != want {
            return Err(TrainError::HashMismatch {
                what: "checkpoint",
                want,
                got,
            });
        }
    }
    Ok(w)
}

pub fn save(w: &Weights, path: &Path) -> Result<Hash256> {
    let b = to_safetensors(w)?;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, b).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    Ok(w.hash())
}

pub fn load(path: &Path, expect: Option<Hash256>) -> Result<Weights> {
    let b = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    from_safetensors(&b, expect)
}

/// GGUF bytes of `w` as an F32 llama model with the byte-level vocabulary (3 specials, then
/// one token per byte, no merges) and a ChatML template: `deai run`, the worker and
/// `deai verify` load it like any other model.
pub fn to_gguf(w: &Weights, name: &str) -> Result<Vec<u8>> {
    w.check()?;
    let c = &w.cfg;
    let mut tokens: Vec<String> = deai_engine::testing::SPECIALS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3i32; BYTE_OFFSET as usize];
    for b in 0..=255u8 {
        tokens.push(deai_engine::tokenizer::byte_char(b).to_string());
        types.push(1);
    }
    let s = |x: &str| Value::String(x.to_string());
    let u = |x: usize| Value::U32(x as u32);
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("general.name", s(name)),
        ("llama.block_count", u(c.n_layer)),
        ("llama.embedding_length", u(c.d_model)),
        ("llama.feed_forward_length", u(c.d_ff)),
        ("llama.attention.head_count", u(c.n_head)),
        ("llama.attention.head_count_kv", u(c.n_head)),
        ("llama.rope.freq_base", Value::F32(ROPE_BASE)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(RMS_EPS)),
        ("llama.context_length", u(c.seq_len)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", u(1)),
        ("tokenizer.ggml.eos_token_id", u(2)),
        (
            "tokenizer.chat_template",
            s("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
        ),
        ("deai.train.weights_hash", s(&w.hash().to_hex())),
    ];
    let bytes: Vec<Vec<u8>> = w
        .tensors
        .iter()
        .map(|t| t.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let layout = c.tensors();
    let tensors: Vec<TensorOut> = layout
        .iter()
        .zip(&bytes)
        .map(|((name, shape), data)| TensorOut {
            name,
            wtype: WType::F32,
            dims: shape.clone(),
            data,
        })
        .collect();
    Ok(write_gguf(&meta, &tensors)?)
}
