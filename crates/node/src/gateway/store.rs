//! The gateway's files: each relayed receipt, which job answered which request (both ways),
//! and each request's prompt and answer for its owner. They survive restarts, so
//! `GET /v1/receipts/{id}` keeps working.
//!
//! Layout under the gateway's directory:
//! - `receipts/{job}.json`: the worker's receipt (its JSON view);
//! - `requests/{request}`: the job that answered the request;
//! - `requests/{job}.request`: the request a job answered;
//! - `requests/{request}.prompt.json`: `{"owner", "prompt", "client"}`;
//! - `requests/{request}.answer.txt`: the answer's text.

use deai_types::Hash256;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The gateway's directory of receipts and conversations.
#[derive(Clone)]
pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating where missing) the store under `dir`.
    pub(super) fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("receipts"))?;
        std::fs::create_dir_all(dir.join("requests"))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn conversation_path(&self, id: &Hash256, what: &str) -> PathBuf {
        self.dir.join("requests").join(format!("{id}.{what}"))
    }

    fn receipt_path(&self, job: &Hash256) -> PathBuf {
        self.dir.join("receipts").join(format!("{job}.json"))
    }

    /// Keeps the prompt of `request`, for its owner only: `record` is
    /// `{"owner": <SHA-256 of the API key>, "prompt": ..., "client": ...}`.
    pub(super) async fn keep_prompt(
        &self,
        request: &Hash256,
        record: &Value,
    ) -> std::io::Result<()> {
        let path = self.conversation_path(request, "prompt.json");
        tokio::fs::write(&path, record.to_string()).await
    }

    /// Keeps what answered `request`: the receipt of `job`, the links between request and
    /// job (both ways), and the answer's text (shown to the request's owner).
    pub(super) async fn keep_answer(
        &self,
        request: &Hash256,
        job: &Hash256,
        receipt: &Value,
        answer: &str,
    ) -> anyhow::Result<()> {
        tokio::fs::write(self.receipt_path(job), serde_json::to_vec_pretty(receipt)?).await?;
        // Request id -> the job that answered it (survives restarts).
        let req_path = self.dir.join("requests").join(request.to_string());
        tokio::fs::write(&req_path, job.to_string()).await?;
        // ... and back, and the answer (shown to the request's owner).
        tokio::fs::write(self.conversation_path(job, "request"), request.to_string()).await?;
        tokio::fs::write(self.conversation_path(request, "answer.txt"), answer).await?;
        Ok(())
    }

    /// What `id` names: `(job, request)`. A request id maps to the job that answered it; a
    /// job id stands for itself, with the request it answered when this gateway relayed it.
    pub(super) async fn resolve(&self, id: &Hash256) -> (Hash256, Option<Hash256>) {
        let mapped: Option<Hash256> =
            tokio::fs::read_to_string(self.dir.join("requests").join(id.to_string()))
                .await
                .ok()
                .and_then(|s| s.trim().parse().ok());
        match mapped {
            Some(job) => (job, Some(*id)),
            None => {
                let request = tokio::fs::read_to_string(self.conversation_path(id, "request"))
                    .await
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                (*id, request)
            }
        }
    }

    /// The receipt of `job` this gateway relayed, if any.
    pub(super) async fn receipt(&self, job: &Hash256) -> Option<Value> {
        tokio::fs::read(self.receipt_path(job))
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// The prompt and answer of `request`, if `viewer` (the SHA-256 of an API key) is the key
    /// that sent it: two keys paying from one account do not see each other's prompts.
    pub(super) async fn conversation(
        &self,
        request: &Hash256,
        viewer: Option<Hash256>,
    ) -> Option<Value> {
        let viewer = viewer?;
        let rec: Value = serde_json::from_slice(
            &tokio::fs::read(self.conversation_path(request, "prompt.json"))
                .await
                .ok()?,
        )
        .ok()?;
        if rec["owner"].as_str()? != viewer.to_string() {
            return None;
        }
        let answer = tokio::fs::read_to_string(self.conversation_path(request, "answer.txt"))
            .await
            .ok();
        Some(json!({ "prompt": rec["prompt"], "answer": answer }))
    }
}
