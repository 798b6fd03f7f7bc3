//! Test setup shared by the node's unit tests: the tiny generated model and an honest receipt
//! from it.

use deai_engine::{Engine, EngineConfig, GenParams};
use deai_proof::{JobSpec, Receipt};
use deai_types::Hash256;

/// A generated tiny model, loaded as the engine loads any GGUF file.
pub(crate) fn tiny_model() -> deai_engine::Model {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(
        &path,
        deai_engine::testing::tiny_model_gguf(&Default::default()),
    )
    .unwrap();
    deai_engine::Model::load(&path).unwrap()
}

/// An honest job on the tiny model: the engine, the job, and the receipt a fresh worker key
/// signed for it (model id `[9; 32]`, prompt `[5, 6, 7]`, 4 tokens, nonce `[1; 32]`).
pub(crate) struct TinyJob {
    pub engine: Engine,
    pub spec: JobSpec,
    pub receipt: Receipt,
}

impl TinyJob {
    pub fn new() -> Self {
        let engine = Engine::new(tiny_model(), EngineConfig::default()).unwrap();
        let spec = JobSpec {
            model_id: Hash256([9; 32]),
            prompt_tokens: vec![5, 6, 7],
            params: GenParams {
                max_tokens: 4,
                ..Default::default()
            },
            nonce: [1; 32],
        };
        let g = engine
            .generate(&spec.prompt_tokens, &spec.params, |_| {})
            .unwrap();
        let receipt = deai_proof::build_receipt(
            &spec,
            &g,
            engine.model.cfg.d_model,
            &engine.profile(),
            deai_proof::ProofConfig::default(),
            &deai_proof::generate_key(),
        )
        .unwrap();
        TinyJob {
            engine,
            spec,
            receipt,
        }
    }

    /// The job id.
    pub fn id(&self) -> Hash256 {
        Hash256(self.spec.id())
    }
}
