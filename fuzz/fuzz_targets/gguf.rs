//! Arbitrary bytes as a GGUF file: opening it, reading every tensor, building the tokenizer
//! and loading the model must return errors, never panic or abort. A model that loads also
//! runs a two-token forward pass and tokenizes a string.
//!
//! The engine reads GGUF files by path, so each input is written to a scratch file of this
//! process (in /dev/shm when it exists, so no disk I/O) and removed after the run.

#![no_main]

use deai_engine::gguf::GgufFile;
use deai_engine::kv::KvCache;
use deai_engine::tokenizer::Tokenizer;
use deai_engine::Model;
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        quiet_caught_parser_panics();
        dir.join(format!("deai-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

/// The engine runs candle's GGUF header parser under `catch_unwind` and turns its panics
/// (e.g. a division by a zero `general.alignment`) into errors. libFuzzer's panic hook would
/// abort on those caught panics before the unwinding reaches `catch_unwind`, so panics raised
/// inside candle's `gguf_file.rs` are passed on silently; every other panic still aborts
/// (through the previous hook, or the abort libfuzzer-sys does when a panic escapes the
/// target). Set `DEAI_FUZZ_STRICT=1` to abort on those too.
fn quiet_caught_parser_panics() {
    if std::env::var_os("DEAI_FUZZ_STRICT").is_some_and(|v| v == "1") {
        return;
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_parser = info.location().is_some_and(|l| {
            let f = l.file().replace('\\', "/");
            f.contains("/candle-core-") && f.ends_with("quantized/gguf_file.rs")
        });
        if !in_parser {
            prev(info);
        }
    }));
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write the scratch file");
    check(path);
    // Removed after every input, so no file is left behind when the fuzzer exits.
    let _ = std::fs::remove_file(path);
});

fn check(path: &Path) {
    if let Ok(mut g) = GgufFile::open(path) {
        let mut names: Vec<String> = g.tensor_names().cloned().collect();
        names.sort();
        for name in &names {
            let info = g.tensor_info(name);
            if let Ok(t) = g.read_tensor(name) {
                let (wtype, dims) = info.expect("a readable tensor has info");
                assert_eq!(t.wtype, wtype);
                assert_eq!(t.dims, dims);
                let n: usize = dims.iter().product();
                assert_eq!(wtype.bytes_for(n), Some(t.data.len()));
            }
        }
        for key in g.metadata().keys().cloned().collect::<Vec<_>>() {
            let _ = g.get_str(&key);
            let _ = g.get_uint(&key);
            let _ = g.get_f32(&key);
            let _ = g.get_array(&key);
        }
        if let Ok(tok) = Tokenizer::from_gguf(&g) {
            if let Ok(ids) = tok.encode("Hello <|im_start|>world 123", true) {
                assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
                let _ = tok.decode(&ids);
            }
        }
    }

    if let Ok(model) = Model::load(path) {
        let c = &model.cfg;
        let n = c.n_ctx.min(2);
        if n > 0 {
            let toks: Vec<u32> = (0..n as u32).map(|i| i % c.vocab as u32).collect();
            let mut cache = KvCache::new(c.n_layer, c.kv_dim(), n);
            if let Ok(out) = model.forward(&toks, &mut cache, 0) {
                assert_eq!(out.hidden.len(), n * c.d_model);
                assert_eq!(out.logits.len(), n * c.vocab);
            }
        }
    }
}
