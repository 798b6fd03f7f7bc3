//! Writes the seed corpora: `cargo run --example seeds` (from `fuzz/`) fills
//! `corpus/gguf/` with small generated models in every weight format and
//! `corpus/tokenizer_encode/` with a few strings. Both folders are git-ignored.

use deai_engine::gguf::WType;
use deai_engine::testing::{tiny_model_gguf, TinySpec};
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let gguf = root.join("gguf");
    std::fs::create_dir_all(&gguf).unwrap();
    let small = TinySpec {
        n_layer: 1,
        d_model: 32,
        n_head: 2,
        n_kv_head: 1,
        d_ff: 32,
        n_ctx: 16,
        ..TinySpec::default()
    };
    for wtype in [
        WType::Q4_0,
        WType::Q4_1,
        WType::Q8_0,
        WType::F16,
        WType::F32,
    ] {
        let spec = TinySpec {
            wtype,
            ..small.clone()
        };
        let name = format!("tiny-{}.gguf", wtype.name());
        std::fs::write(gguf.join(name), tiny_model_gguf(&spec)).unwrap();
    }
    let two_layers = TinySpec {
        n_layer: 2,
        ..small
    };
    std::fs::write(
        gguf.join("tiny-2-layers.gguf"),
        tiny_model_gguf(&two_layers),
    )
    .unwrap();

    let tok = root.join("tokenizer_encode");
    std::fs::create_dir_all(&tok).unwrap();
    let texts = [
        "\u{0}hello world",
        "\u{1}<|im_start|>user\nhi<|im_end|>\n",
        "\u{0}  two  spaces\tand\ttabs\n\n",
        "\u{1}caf\u{e9} 12345 \u{1F600} <|endoftext|>",
        "\u{0}hell hello he ll tt \u{4e2d}\u{6587}",
    ];
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(tok.join(format!("seed-{i}")), t).unwrap();
    }
    println!("seeds written under {}", root.display());
}
