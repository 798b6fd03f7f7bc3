//! GGUF reading. The header and metadata are parsed by candle-core's `gguf_file` (bounded:
//! string and array lengths are checked against the file size); tensor bytes are read here,
//! with every size computed by checked arithmetic, into owned buffers in GGUF block layout.

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub use crate::tensor::{RawTensor, WType};

/// A parsed GGUF file: metadata plus a way to read tensors on demand.
pub struct GgufFile {
    content: Content,
    file: File,
    file_size: u64,
    path: String,
}

fn io_err(path: &str, e: std::io::Error) -> EngineError {
    EngineError::Io {
        path: path.to_string(),
        source: e,
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let mut file = File::open(path).map_err(|e| io_err(&p, e))?;
        let file_size = file.seek(SeekFrom::End(0)).map_err(|e| io_err(&p, e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io_err(&p, e))?;
        let content =
            read_content(&mut file).map_err(|e| EngineError::Gguf(format!("{p}: {e}")))?;
        Ok(Self {
            content,
            file,
            file_size,
            path: p,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &String> {
        self.content.tensor_infos.keys()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Dims (outermost first) and type of a tensor, without reading its data.
    pub fn tensor_info(&self, name: &str) -> Result<(WType, Vec<usize>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| EngineError::Gguf(format!("missing tensor {name}")))?;
        let wtype = WType::from_ggml(info.ggml_dtype).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "tensor {name} has type {:?}; supported: F32, F16, Q4_0, Q4_1, Q8_0",
                info.ggml_dtype
            ))
        })?;
        Ok((wtype, info.shape.dims().to_vec()))
    }

    pub fn read_tensor(&mut self, name: &str) -> Result<RawTensor> {
        let (wtype, dims) = self.tensor_info(name)?;
        let info = &self.content.tensor_infos[name];
        let n = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| EngineError::Gguf(format!("tensor {name}: element count overflows")))?;
        let bytes = wtype.bytes_for(n).ok_or_else(|| {
            EngineError::Gguf(format!(
                "tensor {name}: {n} elements is not a whole number of {} blocks",
                wtype.name()
            ))
        })?;
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .ok_or_else(|| EngineError::Gguf(format!("tensor {name}: offset overflows")))?;
        let end = start.checked_add(bytes as u64);
        if end.is_none_or(|e| e > self.file_size) {
            return Err(EngineError::Gguf(format!(
                "tensor {name} needs bytes {start}..{} but the file has {} (truncated?)",
                start.saturating_add(bytes as u64),
                self.file_size
            )));
        }
        let mut data = vec![0u8; bytes];
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|e| io_err(&self.path, e))?;
        self.file
            .read_exact(&mut data)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(RawTensor { wtype, dims, data })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(EngineError::Gguf(format!(
                "{key}: expected a string, got {v:?}"
            ))),
            None => Err(EngineError::Gguf(format!("missing metadata key {key}"))),
        }
    }

    /// An unsigned integer of any width (GGUF writers disagree on widths).
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            Some(v) => value_as_u64(v).ok_or_else(|| {
                EngineError::Gguf(format!("{key}: expected an unsigned integer, got {v:?}"))
            }),
            None => Err(EngineError::Gguf(format!("missing metadata key {key}"))),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(v)) => Ok(*v),
            Some(Value::F64(v)) => Ok(*v as f32),
            Some(v) => Err(EngineError::Gguf(format!(
                "{key}: expected a float, got {v:?}"
            ))),
            None => Err(EngineError::Gguf(format!("missing metadata key {key}"))),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key) {
            Some(Value::Array(v)) => Ok(v),
            Some(v) => Err(EngineError::Gguf(format!(
                "{key}: expected an array, got {}",
                short_debug(v)
            ))),
            None => Err(EngineError::Gguf(format!("missing metadata key {key}"))),
        }
    }
}

/// Candle's reader is bounded, but a zero `general.alignment` divides by zero inside it; any
/// panic in a third-party parser becomes an error here rather than taking the process down,
/// and is not printed (see [`quiet_catch`]).
fn read_content(file: &mut File) -> std::result::Result<Content, String> {
    match quiet_catch(|| Content::read(file)) {
        Ok(Ok(c)) => Ok(c),
        // Only the message: candle attaches a backtrace when RUST_BACKTRACE is set.
        Ok(Err(candle_core::Error::WithBacktrace { inner, .. })) => Err(inner.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("malformed header (parser rejected it)".to_string()),
    }
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` that also keeps the panic hook from printing a panic raised inside `f` on
/// this thread (the panic is an expected parse failure, reported as an error). Panics
/// elsewhere are printed by the previous hook as usual.
fn quiet_catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                prev(info)
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    r
}

pub fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn short_debug(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// A tensor to write: name, type, dims (outermost first, as [`RawTensor`]), raw block bytes.
pub struct TensorOut<'a> {
    pub name: &'a str,
    pub wtype: WType,
    pub dims: Vec<usize>,
    pub data: &'a [u8],
}

const ALIGN: usize = 32;

fn ggml_type_id(t: WType) -> u32 {
    match t {
        WType::F32 => 0,
        WType::F16 => 1,
        WType::Q4_0 => 2,
        WType::Q4_1 => 3,
        WType::Q8_0 => 8,
    }
}

fn write_str(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(&(s.len() as u64).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write_value(w: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => w.push(*x),
        Value::I8(x) => w.push(*x as u8),
        Value::U16(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => w.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => w.push(*x as u8),
        Value::String(s) => write_str(w, s),
        Value::Array(items) => {
            let t = items.first().map_or(4, value_type);
            if items.iter().any(|i| value_type(i) != t) {
                return Err(EngineError::Gguf("array elements of mixed types".into()));
            }
            w.extend_from_slice(&t.to_le_bytes());
            w.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                write_value(w, i)?;
            }
        }
    }
    Ok(())
}

/// Serialize a GGUF v3 file (32-byte aligned tensor data). Used to re-quantize models and to
/// build test models; [`GgufFile::open`] reads the result.
pub fn write_gguf(metadata: &[(&str, Value)], tensors: &[TensorOut]) -> Result<Vec<u8>> {
    let mut w = Vec::new();
    w.extend_from_slice(b"GGUF");
    w.extend_from_slice(&3u32.to_le_bytes());
    w.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    w.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_str(&mut w, k);
        w.extend_from_slice(&value_type(v).to_le_bytes());
        write_value(&mut w, v)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.dims.iter().product();
        if t.wtype.bytes_for(n) != Some(t.data.len()) {
            return Err(EngineError::Gguf(format!(
                "{}: {} bytes do not hold {:?} of {}",
                t.name,
                t.data.len(),
                t.dims,
                t.wtype.name()
            )));
        }
        write_str(&mut w, t.name);
        w.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims.iter().rev() {
            w.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        w.extend_from_slice(&ggml_type_id(t.wtype).to_le_bytes());
        w.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.data.len().div_ceil(ALIGN) * ALIGN;
    }
    w.resize(w.len().div_ceil(ALIGN) * ALIGN, 0);
    for t in tensors {
        w.extend_from_slice(t.data);
        w.resize(w.len().div_ceil(ALIGN) * ALIGN, 0);
    }
    Ok(w)
}

/// Re-quantize every 2-D quantized tensor of `src` into `to` (through f32) and write the
/// result to `dst`, keeping metadata and 1-D tensors. Used to benchmark other formats of the
/// same model (e.g. the shipped Q4_1 as Q8_0).
pub fn requantize(src: &Path, dst: &Path, to: WType) -> Result<()> {
    rewrite(src, dst, |_, t| {
        (t.dims.len() == 2 && t.wtype.is_quantized() && t.wtype != to).then_some((to, None))
    })
}

/// Copy `src` to `dst` with tensor `name` perturbed: Gaussian-like noise of `rel` times the
/// tensor's RMS added to every weight (seeded, reproducible), re-quantized to its own type.
/// The tamper tests use it as "one layer changed by noise".
pub fn perturb_tensor(src: &Path, dst: &Path, name: &str, rel: f32, seed: u64) -> Result<()> {
    let mut found = false;
    rewrite(src, dst, |n, t| {
        (n == name).then(|| {
            found = true;
            (t.wtype, Some((rel, seed)))
        })
    })?;
    if !found {
        return Err(EngineError::Gguf(format!("no tensor named {name}")));
    }
    Ok(())
}

/// Rewrite a GGUF file tensor by tensor. `plan(name, tensor)` returns `None` to copy the tensor
/// as is, or the type to re-quantize it into and optional noise (relative scale, seed).
fn rewrite(
    src: &Path,
    dst: &Path,
    mut plan: impl FnMut(&str, &RawTensor) -> Option<(WType, Option<(f32, u64)>)>,
) -> Result<()> {
    let mut g = GgufFile::open(src)?;
    let mut names: Vec<String> = g.tensor_names().cloned().collect();
    names.sort();
    let mut owned = vec![];
    for name in &names {
        let t = g.read_tensor(name)?;
        let Some((to, noise)) = plan(name, &t) else {
            owned.push((name.clone(), t.wtype, t.dims, t.data));
            continue;
        };
        let dims = t.dims.clone();
        let cols = *dims.last().unwrap_or(&1);
        let rows = dims.iter().product::<usize>() / cols.max(1);
        let m = crate::quant::QMatrix::new(t.wtype, rows, cols, t.data)
            .map_err(|e| EngineError::Gguf(format!("{name}: {e}")))?;
        let mut x = vec![0f32; rows * cols];
        for (r, row) in x.chunks_exact_mut(cols).enumerate() {
            m.dequantize_row(r, row);
        }
        if let Some((rel, seed)) = noise {
            let rms =
                (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt();
            let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
            for v in x.iter_mut() {
                // Sum of 4 uniforms: roughly Gaussian, unit variance after scaling.
                let mut u = 0.0f64;
                for _ in 0..4 {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    u += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                }
                *v += (u * 3f64.sqrt() * rms * rel as f64) as f32;
            }
        }
        let q = crate::quant::QMatrix::quantize(to, rows, cols, &x)?;
        owned.push((name.clone(), to, dims, q.data));
    }
    let mut meta: Vec<(&str, Value)> = g
        .metadata()
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(b.0));
    let tensors: Vec<TensorOut> = owned
        .iter()
        .map(|(n, t, d, data)| TensorOut {
            name: n,
            wtype: *t,
            dims: d.clone(),
            data,
        })
        .collect();
    let bytes = write_gguf(&meta, &tensors)?;
    let tmp = dst.with_extension("gguf.part");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, dst).map_err(|e| io_err(&dst.display().to_string(), e))
}
