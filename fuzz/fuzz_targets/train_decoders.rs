//! Arbitrary bytes through every decoder of the training protocol: contributions (with their
//! int8 pseudo-gradients), train-state openings, checkpoints (safetensors), shards and round
//! evidence (what auditors replay a round from) must
//! return errors, never panic; whatever decodes re-encodes to the same bytes.

#![no_main]

use deai_train::audit::RoundEvidence;
use deai_train::checkpoint::{from_safetensors, to_safetensors};
use deai_train::data::Shard;
use deai_train::diloco::Contribution;
use deai_train::optim::TrainState;
use deai_train::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = ModelConfig::preset("tiny").expect("preset");
    if let Ok(c) = Contribution::from_bytes(data, &cfg) {
        assert_eq!(c.to_bytes(), data);
        let _ = c.verify_signature();
        let _ = c.delta.dequantize();
    }
    if let Ok(s) = TrainState::from_bytes(data, &cfg) {
        assert_eq!(s.to_bytes(), data);
    }
    if let Ok(w) = from_safetensors(data, None) {
        assert!(w.check().is_ok());
        let again = from_safetensors(&to_safetensors(&w).expect("encodes"), Some(w.hash()));
        assert_eq!(again.expect("round trip"), w);
    }
    if let Ok(s) = Shard::from_bytes(data, None) {
        assert_eq!(s.to_bytes(), data);
    }
    if let Ok(e) = RoundEvidence::from_bytes(data) {
        assert_eq!(e.to_bytes(), data);
    }
});
