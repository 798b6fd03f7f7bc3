//! The client side of the worker protocol ([`crate::proto`]): the HTTP calls a gateway or a
//! validator makes to a worker's endpoint. `POST /worker/v1/run` sends a job and reads the
//! worker's newline-delimited JSON events back; `GET /worker/v1/health` asks for its load.
//!
//! Owns the URLs, the timeouts and the NDJSON framing; what to do with the events (relay
//! them, check the receipt) is the caller's.

use crate::proto::{RunEvent, RunRequest};
use serde_json::Value;
use std::time::Duration;

/// Longest wait for a worker's health answer (anyone can register an endpoint: keep a probe
/// short).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// A worker reached at its registered endpoint.
pub struct WorkerClient {
    /// The endpoint without a trailing `/`.
    endpoint: String,
    http: reqwest::Client,
    /// Longest wait for the worker to answer a run, and then for each piece of its stream.
    silence: Duration,
}

impl WorkerClient {
    /// A client for the worker at `endpoint`; a run may last at most `limit` in all, and the
    /// worker may stay silent for at most `silence` (before answering, and between pieces of
    /// its stream).
    pub fn new(endpoint: &str, limit: Duration, silence: Duration) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let http = crate::http_client(&endpoint, limit);
        WorkerClient {
            endpoint,
            http,
            silence,
        }
    }

    /// `POST /worker/v1/run`: sends the job; once the worker accepted it, its event stream.
    /// Fails when no answer comes within the silence limit, or the worker refuses (its HTTP
    /// status and body).
    pub async fn run(&self, req: &RunRequest) -> anyhow::Result<RunStream> {
        let url = format!("{}/worker/v1/run", self.endpoint);
        let resp = tokio::time::timeout(self.silence, self.http.post(&url).json(req).send())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.silence))??;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("HTTP {status}: {body}");
        }
        Ok(RunStream {
            resp,
            buf: Vec::new(),
            silence: self.silence,
        })
    }

    /// `GET /worker/v1/health`, asked with a short timeout: the worker's own figures (compute
    /// time, jobs in flight), or `None` when it does not answer.
    pub async fn health(&self) -> Option<Value> {
        let url = format!("{}/worker/v1/health", self.endpoint);
        let r = self
            .http
            .get(&url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    }
}

/// A worker's answer to a run: one [`RunEvent`] per line.
pub struct RunStream {
    resp: reqwest::Response,
    /// Bytes read but not yet a whole line.
    buf: Vec<u8>,
    silence: Duration,
}

impl RunStream {
    /// The next event; `None` once the stream ended. A line that is not an event, or a
    /// worker silent for longer than the limit, is an error.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<RunEvent>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            if !self.read_chunk().await? {
                return Ok(None);
            }
        }
    }

    /// Reads the stream to its end and returns its events, skipping lines that are not one
    /// (the caller judges what is left, e.g. whether a receipt came).
    pub async fn remaining_events(mut self) -> anyhow::Result<Vec<RunEvent>> {
        while self.read_chunk().await? {}
        Ok(String::from_utf8_lossy(&self.buf)
            .lines()
            .filter_map(|l| serde_json::from_str::<RunEvent>(l).ok())
            .collect())
    }

    /// Appends the next piece of the body to `buf`; false at the end of the body.
    async fn read_chunk(&mut self) -> anyhow::Result<bool> {
        let chunk = tokio::time::timeout(self.silence, self.resp.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("silent for {:?}", self.silence))??;
        match chunk {
            Some(c) => {
                self.buf.extend_from_slice(&c);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
