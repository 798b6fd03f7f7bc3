//! The OpenAI side of the gateway: the request shapes of `POST /v1/chat/completions` and
//! `POST /v1/completions`, their validation (every parameter checked, refused or knowingly
//! ignored), and their translation into a prompt's tokens and the engine's [`GenParams`];
//! tool definitions, the tool-call layout the model writes and its parsing back.
//!
//! Nothing here talks to a worker or the ledger: a request becomes a [`Prepared`] run, which
//! the gateway routes ([`super::routing`]) and renders ([`super::stream`]).

use super::config::CatalogEntry;
use crate::{http_error, HttpError};
use axum::http::StatusCode;
use axum::Json;
use deai_engine::json_schema::{Json as OrderedJson, JsonSchema};
use deai_engine::sampler::{self, MAX_TOP_LOGPROBS};
use deai_engine::tokenizer::{chat_prompt, ChatMessage};
use deai_engine::{GenParams, SamplingParams};
use deai_types::Hash256;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub(super) struct ChatRequest {
    pub(super) model: String,
    messages: Vec<ChatMsg>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct ChatMsg {
    role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts; `null` in an assistant
    /// message that calls tools.
    #[serde(default)]
    content: Value,
    /// An assistant message's tool calls (sent back by the client with the tools' results).
    #[serde(default)]
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct CompletionRequest {
    pub(super) model: String,
    prompt: Value,
    /// Answer with the prompt followed by the completion.
    echo: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize, Default)]
struct Common {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<Value>,
    stream: Option<bool>,
    n: Option<u64>,
    /// Chat: a bool; completions: how many alternatives (0..=5).
    logprobs: Option<Value>,
    /// Chat only: alternatives per token (0..=20), with `logprobs: true`.
    top_logprobs: Option<Value>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    /// `{"token id": bias}`, bias in -100..=100.
    logit_bias: Option<Value>,
    /// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", ...}` (kept
    /// in document order: a schema's property order is the output's key order).
    response_format: Option<OrderedJson>,
    /// Chat: `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
    tools: Option<OrderedJson>,
    /// Chat: `"none"`, `"auto"` (the default with tools), `"required"` or
    /// `{"type": "function", "function": {"name": ...}}`.
    tool_choice: Option<OrderedJson>,
    /// Every other field, checked by [`Common::check_rest`].
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// OpenAI parameters accepted and ignored: they do not change the answer.
const IGNORED_PARAMS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
    // `include_usage`: the final chunk always carries `usage`.
    "stream_options",
];

const DEFAULT_MAX_TOKENS: usize = 256;
const MAX_STOPS: usize = 4;
/// Most choices (`n`) per request: each is a separate job, escrowed and verified on its own.
const MAX_CHOICES: usize = 8;

impl Common {
    /// Refuses OpenAI features this gateway does not implement when a request asks for them
    /// (rather than silently answering without them), and names fields OpenAI does not know.
    fn check_rest(&self) -> Result<(), HttpError> {
        for (k, v) in &self.rest {
            let off = match k.as_str() {
                k if IGNORED_PARAMS.contains(&k) => true,
                "echo" => v.is_null() || *v == Value::Bool(false),
                "best_of" => v.is_null() || v.as_u64() == Some(1),
                // The deprecated forms of `tools` and `tool_choice`.
                "functions" => v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
                "function_call" => v.is_null() || v.as_str() == Some("none"),
                "suffix" => v.is_null() || v.as_str() == Some(""),
                _ => {
                    return Err(http_error(
                        StatusCode::BAD_REQUEST,
                        format!("Unrecognized request argument supplied: {k}"),
                    )
                    .with_code("unknown_parameter"))
                }
            };
            if !off {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{k} is not supported by this gateway (answers are plain text from one \
                         verifiable run); leave it unset"
                    ),
                )
                .with_code("unsupported_parameter"));
            }
        }
        Ok(())
    }

    /// Choices to generate: `n` in 1..=[`MAX_CHOICES`] (default 1), each its own job.
    fn n(&self) -> Result<usize, HttpError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES as u64).contains(&n) => Ok(n as usize),
            Some(n) => Err(http_error(
                StatusCode::BAD_REQUEST,
                format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
            )
            .with_code("invalid_value")),
        }
    }

    /// How many alternatives per token to report, if the request asked for logprobs at all.
    /// Chat: `logprobs: true` with `top_logprobs` in 0..=20; completions: `logprobs` in 0..=5
    /// (OpenAI's limits).
    fn top_logprobs(&self, chat: bool) -> Result<Option<usize>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m).with_code("invalid_value");
        let count = |v: &Value, name: &str, max: usize| match v.as_u64() {
            Some(k) if k as usize <= max => Ok(k as usize),
            _ => Err(bad(format!(
                "{name} must be an integer between 0 and {max}, got {v}"
            ))),
        };
        let top = self.top_logprobs.as_ref().filter(|v| !v.is_null());
        let on = self.logprobs.as_ref().filter(|v| !v.is_null());
        if !chat {
            if top.is_some() {
                return Err(bad(
                    "top_logprobs is a chat parameter; completions take logprobs: <count>".into(),
                ));
            }
            if on == Some(&Value::Bool(false)) {
                return Ok(None);
            }
            return on.map(|v| count(v, "logprobs", 5)).transpose();
        }
        let off = on.is_none_or(|v| *v == Value::Bool(false) || v.as_u64() == Some(0));
        match on {
            _ if off => match top {
                Some(v) if v.as_u64() != Some(0) => {
                    Err(bad("top_logprobs needs logprobs: true".into()))
                }
                _ => Ok(None),
            },
            Some(Value::Bool(true)) => Ok(Some(
                top.map(|v| count(v, "top_logprobs", MAX_TOP_LOGPROBS))
                    .transpose()?
                    .unwrap_or(0),
            )),
            Some(v) => Err(bad(format!("logprobs must be a boolean, got {v}"))),
            None => Ok(None),
        }
    }

    /// `logit_bias` as the sampler takes it: ids parsed, below `vocab`, sorted, each bias in
    /// range.
    fn logit_bias(&self, vocab: usize) -> Result<Vec<(u32, f32)>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let map = match &self.logit_bias {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(m)) => m,
            Some(v) => {
                return Err(bad(format!(
                    "logit_bias must be an object mapping token ids to biases, got {v}"
                )))
            }
        };
        if map.len() > sampler::MAX_LOGIT_BIAS {
            return Err(bad(format!(
                "logit_bias has {} entries, at most {} are allowed",
                map.len(),
                sampler::MAX_LOGIT_BIAS
            )));
        }
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let t = k
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    bad(format!(
                        "logit_bias key {k:?} is not a token id of this model (0..{vocab})"
                    ))
                })?;
            let b = v
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    bad(format!(
                        "logit_bias for token {k} must be a number between -100 and 100, got {v}"
                    ))
                })?;
            // `+ 0.0` turns -0 into 0 (receipts keep one encoding per value).
            out.push((t, b as f32 + 0.0));
        }
        out.sort_by_key(|(t, _)| *t);
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad("logit_bias names a token id twice".into()));
        }
        Ok(out)
    }

    /// The output grammar `response_format` asks for: `(json_object, schema)`. As OpenAI
    /// requires, JSON mode needs the prompt to mention JSON (a model not told to write JSON can
    /// fill its budget with whitespace, which that grammar allows; a schema's layout allows
    /// none).
    fn output_format(&self, prompt: &str) -> Result<(bool, Option<JsonSchema>), HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let Some(v) = self
            .response_format
            .as_ref()
            .filter(|v| **v != OrderedJson::Null)
        else {
            return Ok((false, None));
        };
        match v.get("type").and_then(OrderedJson::as_str) {
            Some("text") => Ok((false, None)),
            Some("json_object") => {
                if !prompt.to_lowercase().contains("json") {
                    return Err(bad(
                        "'messages' (or the prompt) must contain the word 'json' in some form, \
                         to use 'response_format' of type 'json_object'"
                            .into(),
                    ));
                }
                Ok((true, None))
            }
            Some("json_schema") => {
                let spec = v.get("json_schema").ok_or_else(|| {
                    bad("response_format json_schema needs a json_schema object".into())
                })?;
                let name = spec.get("name").and_then(OrderedJson::as_str).unwrap_or("");
                if !valid_name(name) {
                    return Err(bad(format!(
                        "response_format.json_schema.name must be 1-64 letters, digits, _ or -, \
                         got {name:?}"
                    ))
                    .with_code("invalid_value"));
                }
                let schema = spec
                    .get("schema")
                    .ok_or_else(|| bad("response_format.json_schema needs a schema".into()))?;
                let schema = JsonSchema::compile_object(schema).map_err(|e| {
                    bad(format!("response_format.json_schema: {e}")).with_code("invalid_value")
                })?;
                Ok((false, Some(schema)))
            }
            _ => Err(bad(format!(
                "response_format must be {{\"type\": \"text\"}}, {{\"type\": \"json_object\"}} \
                 or {{\"type\": \"json_schema\", ...}}, got {}",
                v.to_text()
            ))),
        }
    }

    /// The tools the model may call and how (`None`: no tools, or `tool_choice: "none"`).
    fn tools(&self) -> Result<Option<Tools>, HttpError> {
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m).with_code("invalid_value");
        let no_tools = || match &self.tool_choice {
            None | Some(OrderedJson::Null) => Ok(None),
            Some(OrderedJson::String(c)) if c == "none" || c == "auto" => Ok(None),
            Some(c) => Err(bad(format!("tool_choice {} needs tools", c.to_text()))),
        };
        let list = match &self.tools {
            None | Some(OrderedJson::Null) => return no_tools(),
            Some(OrderedJson::Array(a)) if a.is_empty() => return no_tools(),
            Some(OrderedJson::Array(a)) => a,
            Some(v) => return Err(bad(format!("tools must be a list, got {}", v.to_text()))),
        };
        if list.len() > MAX_TOOLS {
            return Err(bad(format!(
                "tools lists {} functions, at most {MAX_TOOLS} are allowed",
                list.len()
            )));
        }
        let mut tools: Vec<Tool> = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let f = match (
                t.get("type").and_then(OrderedJson::as_str),
                t.get("function"),
            ) {
                (Some("function"), Some(f)) => f,
                _ => {
                    return Err(bad(format!(
                        "tools[{i}] must be {{\"type\": \"function\", \"function\": {{...}}}}"
                    )))
                }
            };
            let name = f.get("name").and_then(OrderedJson::as_str).unwrap_or("");
            if !valid_name(name) {
                return Err(bad(format!(
                    "tools[{i}].function.name must be 1-64 letters, digits, _ or -, got {name:?}"
                )));
            }
            if tools.iter().any(|t| t.name == name) {
                return Err(bad(format!("tools names the function {name:?} twice")));
            }
            let description = match f.get("description") {
                None | Some(OrderedJson::Null) => None,
                Some(OrderedJson::String(d)) => Some(d.clone()),
                Some(_) => {
                    return Err(bad(format!(
                        "tools[{i}].function.description must be a string"
                    )))
                }
            };
            let parameters = match f.get("parameters") {
                None | Some(OrderedJson::Null) => OrderedJson::Object(vec![
                    ("type".into(), OrderedJson::String("object".into())),
                    ("properties".into(), OrderedJson::Object(vec![])),
                ]),
                Some(p) => p.clone(),
            };
            tools.push(Tool {
                name: name.to_string(),
                description,
                parameters,
            });
        }
        let choice = match &self.tool_choice {
            None | Some(OrderedJson::Null) => ToolChoice::Auto,
            Some(OrderedJson::String(c)) => match c.as_str() {
                "none" => {
                    // Unused, but still checked: a bad definition is an error either way.
                    JsonSchema::tool_calls(
                        &tools
                            .iter()
                            .map(|t| (t.name.clone(), t.parameters.clone()))
                            .collect::<Vec<_>>(),
                    )
                    .map_err(|e| bad(format!("tools: {e}")))?;
                    return Ok(None);
                }
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(bad(format!(
                        "tool_choice must be \"none\", \"auto\", \"required\" or a function, got \
                         {other:?}"
                    )))
                }
            },
            Some(c) => match c
                .get("function")
                .filter(|_| c.get("type").and_then(OrderedJson::as_str) == Some("function"))
                .and_then(|f| f.get("name"))
                .and_then(OrderedJson::as_str)
            {
                Some(n) if tools.iter().any(|t| t.name == n) => ToolChoice::Named(n.to_string()),
                Some(n) => {
                    return Err(bad(format!(
                        "tool_choice names {n:?}, which is not in tools"
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "tool_choice must be a string or {{\"type\": \"function\", \"function\": \
                         {{\"name\": ...}}}}, got {}",
                        c.to_text()
                    )))
                }
            },
        };
        // The grammar: a call of one of the allowed tools (or, with "auto", plain text).
        let allowed: Vec<(String, OrderedJson)> = tools
            .iter()
            .filter(|t| match &choice {
                ToolChoice::Named(n) => t.name == *n,
                _ => true,
            })
            .map(|t| (t.name.clone(), t.parameters.clone()))
            .collect();
        let grammar = match choice {
            ToolChoice::Auto => JsonSchema::tool_calls_or_text(&allowed),
            _ => JsonSchema::tool_calls(&allowed),
        }
        .map_err(|e| bad(format!("tools: {e}")))?;
        Ok(Some(Tools {
            tools,
            choice,
            grammar,
        }))
    }

    /// The generation parameters; `prompt` is what the client wrote (the messages' text, or
    /// the completion prompt).
    fn params(
        &self,
        prompt: &str,
        prompt_len: usize,
        n_ctx: usize,
        vocab: usize,
        tools: Option<&Tools>,
    ) -> Result<GenParams, HttpError> {
        self.check_rest()?;
        let bad = |m: String| http_error(StatusCode::BAD_REQUEST, m);
        let max = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => return Err(bad("max_tokens must be at least 1".into())),
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_TOKENS.min(n_ctx.saturating_sub(prompt_len).max(1)),
        };
        let temperature = self.temperature.unwrap_or(0.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(format!(
                "temperature must be between 0 and 2, got {temperature}"
            )));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad(format!("top_p must be in (0, 1], got {top_p}")));
        }
        let penalty = |name: &str, v: Option<f64>| match v.unwrap_or(0.0) {
            v if (-2.0..=2.0).contains(&v) => Ok(v as f32 + 0.0),
            v => Err(bad(format!("{name} must be between -2 and 2, got {v}"))),
        };
        let presence_penalty = penalty("presence_penalty", self.presence_penalty)?;
        let frequency_penalty = penalty("frequency_penalty", self.frequency_penalty)?;
        let logit_bias = self.logit_bias(vocab)?;
        let (json_object, mut json_schema) = self.output_format(prompt)?;
        if let Some(t) = tools {
            if json_object || json_schema.is_some() {
                return Err(bad(
                    "tools and a JSON response_format both constrain the answer; use one".into(),
                ));
            }
            json_schema = Some(t.grammar.clone());
        }
        let stop: Vec<String> = match &self.stop {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("stop must be a string or a list of strings".into()))?,
            Some(_) => return Err(bad("stop must be a string or a list of strings".into())),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err(bad(format!(
                "at most {MAX_STOPS} non-empty stop strings of up to 256 bytes"
            )));
        }
        Ok(GenParams {
            max_tokens: max,
            sampling: SamplingParams {
                temperature: temperature as f32 + 0.0,
                top_k: 0,
                top_p: top_p as f32,
                presence_penalty,
                frequency_penalty,
                logit_bias,
                json_object,
                json_schema,
                // No seed asked: draw one (it is in the receipt, so the run stays checkable).
                seed: self.seed.unwrap_or_else(|| {
                    u64::from_le_bytes(deai_proof::random_nonce()[..8].try_into().expect("8 bytes"))
                }),
            },
            stop,
        })
    }
}

/// Most functions in `tools`.
const MAX_TOOLS: usize = 32;

/// OpenAI's rule for function and schema names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Tool {
    name: String,
    description: Option<String>,
    parameters: OrderedJson,
}

enum ToolChoice {
    Auto,
    Required,
    Named(String),
}

/// A request's tools: shown to the model in the system message, and its output constrained to
/// `grammar` (a call, or with "auto" a call or plain text).
struct Tools {
    tools: Vec<Tool>,
    choice: ToolChoice,
    grammar: JsonSchema,
}

impl Tools {
    /// What the model is told, appended to the system message.
    fn instructions(&self) -> String {
        let mut s = String::from(
            "You can call these functions. To call one, reply with only a JSON object \
             {\"name\": <function name>, \"arguments\": <its arguments>}.\n",
        );
        for t in &self.tools {
            let mut f = vec![("name".to_string(), OrderedJson::String(t.name.clone()))];
            if let Some(d) = &t.description {
                f.push(("description".into(), OrderedJson::String(d.clone())));
            }
            f.push(("parameters".into(), t.parameters.clone()));
            s.push_str(&OrderedJson::Object(f).to_text());
            s.push('\n');
        }
        s.push_str(&match &self.choice {
            ToolChoice::Auto => "If no function helps, answer in plain text.".to_string(),
            ToolChoice::Required => "Reply with a function call.".to_string(),
            ToolChoice::Named(n) => format!("Reply with a call to {n}."),
        });
        s
    }
}

/// An output in the tool-call layout the grammar enforces,
/// `{"name": "<name>", "arguments": <arguments>}`: `(name, arguments text)`, the arguments as
/// the model wrote them. `None` for anything else (plain text, or a call cut short).
pub(super) fn tool_call(text: &str) -> Option<(String, String)> {
    let v: OrderedJson = serde_json::from_str(text).ok()?;
    let v = &v;
    let name = v.get("name")?.as_str()?;
    let head = format!(
        "{{\"name\": {}, \"arguments\": ",
        serde_json::to_string(name).ok()?
    );
    let args = text.strip_prefix(&head)?.strip_suffix('}')?;
    match v {
        OrderedJson::Object(m) if m.len() == 2 && matches!(m[1].1, OrderedJson::Object(_)) => {
            Some((name.to_string(), args.to_string()))
        }
        _ => None,
    }
}

/// The `tool_calls` entry of an answer that called `name` (its id derived from the request).
pub(super) fn tool_call_json(request: &Hash256, name: &str, args: &str) -> Value {
    json!({ "id": format!("call_{}", &request.to_string()[..24]), "type": "function",
            "function": { "name": name, "arguments": args } })
}

/// An assistant message's `tool_calls`, as the text the model wrote for them (one call per
/// line, in the layout the tool grammar enforces).
fn past_calls(calls: &Value) -> Result<String, HttpError> {
    let bad = || {
        http_error(
            StatusCode::BAD_REQUEST,
            "tool_calls must be a list of {\"type\": \"function\", \"function\": {\"name\", \
             \"arguments\"}}",
        )
    };
    let mut lines = Vec::new();
    for c in calls.as_array().ok_or_else(bad)? {
        let f = &c["function"];
        let (Some(name), Some(args)) = (f["name"].as_str(), f["arguments"].as_str()) else {
            return Err(bad());
        };
        lines.push(format!(
            "{{\"name\": {}, \"arguments\": {args}}}",
            serde_json::to_string(name).map_err(|_| bad())?
        ));
    }
    Ok(lines.join("\n"))
}

fn message_text(content: &Value) -> Result<String, HttpError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => {
                        return Err(http_error(
                            StatusCode::BAD_REQUEST,
                            "only text content parts are supported",
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(http_error(
            StatusCode::BAD_REQUEST,
            "message content must be a string or a list of text parts",
        )),
    }
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, HttpError> {
    body.map(|Json(b)| b).map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        http_error(status, format!("malformed request body: {}", e.body_text()))
    })
}

/// A model's entry in OpenAI's shape, with deai's extras.
pub(super) fn model_json(m: &CatalogEntry, workers: usize) -> Value {
    json!({
        "id": m.name, "object": "model", "created": 0, "owned_by": "deai",
        "deai": { "model_id": m.id, "workers": workers, "context_length": m.n_ctx },
    })
}

/// How to answer a request: the OpenAI shape and options around the runs.
pub(super) struct Reply {
    pub(super) top_logprobs: Option<usize>,
    pub(super) n: usize,
    pub(super) stream: bool,
    /// Chat completion objects (else legacy `text_completion`s).
    pub(super) chat: bool,
    /// Completions' `echo`: this text (the prompt) before each choice's answer.
    pub(super) echo: Option<String>,
    /// Chat with tools: an answer in the tool-call layout is returned as `tool_calls`.
    pub(super) tools: bool,
}

/// A checked request, ready to run: the prompt's tokens, the generation parameters, how to
/// answer, and the prompt as kept for its owner (`{"owner": <SHA-256 of the API key>,
/// "prompt": ...}`).
pub(super) struct Prepared {
    pub(super) tokens: Vec<u32>,
    pub(super) params: GenParams,
    pub(super) reply: Reply,
    pub(super) prompt: Value,
}

impl ChatRequest {
    /// Checks a chat request for `model` and writes its messages (with the tools'
    /// instructions in the system message) as the model's prompt; `owner` is the SHA-256 of
    /// the API key that sent it.
    pub(super) fn prepare(
        &self,
        model: &CatalogEntry,
        owner: Option<Hash256>,
    ) -> Result<Prepared, HttpError> {
        if self.messages.is_empty() {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "messages must not be empty",
            ));
        }
        let tools = self.common.tools()?;
        let mut msgs = Vec::new();
        for m in &self.messages {
            if !matches!(
                m.role.as_str(),
                "system" | "user" | "assistant" | "developer" | "tool"
            ) {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown role {:?}", m.role),
                ));
            }
            let role = if m.role == "developer" {
                "system"
            } else {
                &m.role
            };
            if m.tool_calls.as_ref().is_some_and(|c| !c.is_null()) && role != "assistant" {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "tool_calls belong to assistant messages, not {:?} ones",
                        m.role
                    ),
                ));
            }
            let mut content = match &m.content {
                Value::Null if m.tool_calls.is_some() => String::new(),
                c => message_text(c)?,
            };
            // An assistant's earlier calls, written as the model writes them.
            if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
                let calls = past_calls(calls)?;
                if !calls.is_empty() {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&calls);
                }
            }
            msgs.push(ChatMessage {
                role: role.to_string(),
                content,
            });
        }
        if let Some(t) = &tools {
            match msgs.first_mut() {
                Some(m) if m.role == "system" => {
                    m.content = format!("{}\n\n{}", m.content, t.instructions())
                }
                _ => msgs.insert(
                    0,
                    ChatMessage {
                        role: "system".into(),
                        content: format!(
                            "{}\n\n{}",
                            deai_engine::tokenizer::DEFAULT_SYSTEM_PROMPT,
                            t.instructions()
                        ),
                    },
                ),
            }
        }
        let text = chat_prompt(&msgs, true);
        let tokens = model
            .tokenizer
            .encode(&text, true)
            .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
        let said: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
        let params = self.common.params(
            &said.join("\n"),
            tokens.len(),
            model.n_ctx,
            model.tokenizer.vocab_size(),
            tools.as_ref(),
        )?;
        let top = self.common.top_logprobs(true)?;
        if tools.is_some() && top.is_some() {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "logprobs with tools is not supported by this gateway; ask for one or the other",
            )
            .with_code("unsupported_parameter"));
        }
        let stream = self.common.stream.unwrap_or(false);
        let prompt = json!(msgs
            .iter()
            .map(|m| json!({ "role": m.role, "content": m.content }))
            .collect::<Vec<_>>());
        let prompt = json!({ "owner": owner, "prompt": prompt });
        let n = self.common.n()?;
        let reply = Reply {
            top_logprobs: top,
            n,
            stream,
            chat: true,
            echo: None,
            tools: tools.is_some(),
        };
        Ok(Prepared {
            tokens,
            params,
            reply,
            prompt,
        })
    }
}

impl CompletionRequest {
    /// Checks a completion request for `model` and tokenizes its prompt; `owner` is the
    /// SHA-256 of the API key that sent it.
    pub(super) fn prepare(
        &self,
        model: &CatalogEntry,
        owner: Option<Hash256>,
    ) -> Result<Prepared, HttpError> {
        let prompt = match &self.prompt {
            Value::String(s) => s.clone(),
            Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            _ => {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    "prompt must be one string",
                ))
            }
        };
        if prompt.is_empty() {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "prompt must not be empty",
            ));
        }
        let tokens = model
            .tokenizer
            .encode(&prompt, false)
            .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.to_string()))?;
        let empty = |v: &Option<OrderedJson>, off: &OrderedJson| {
            v.as_ref()
                .is_none_or(|v| *v == OrderedJson::Null || v == off)
        };
        if !empty(&self.common.tools, &OrderedJson::Array(vec![]))
            || !empty(
                &self.common.tool_choice,
                &OrderedJson::String("none".into()),
            )
        {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "tools and tool_choice are chat parameters (POST /v1/chat/completions)",
            )
            .with_code("invalid_value"));
        }
        let params = self.common.params(
            &prompt,
            tokens.len(),
            model.n_ctx,
            model.tokenizer.vocab_size(),
            None,
        )?;
        let top = self.common.top_logprobs(false)?;
        let n = self.common.n()?;
        let stream = self.common.stream.unwrap_or(false);
        let echo =
            match &self.echo {
                None | Some(Value::Null) | Some(Value::Bool(false)) => None,
                Some(Value::Bool(true)) if top.is_some() => return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    "echo with logprobs is not supported by this gateway (prompt tokens get no \
                     logprobs); ask for one or the other",
                )
                .with_code("unsupported_parameter")),
                Some(Value::Bool(true)) => Some(prompt.clone()),
                Some(v) => {
                    return Err(http_error(
                        StatusCode::BAD_REQUEST,
                        format!("echo must be a boolean, got {v}"),
                    )
                    .with_code("invalid_value"))
                }
            };
        Ok(Prepared {
            tokens,
            params,
            reply: Reply {
                top_logprobs: top,
                n,
                stream,
                chat: false,
                echo,
                tools: false,
            },
            prompt: json!({ "owner": owner, "prompt": prompt }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(extra: Value) -> Result<(), (StatusCode, String, &'static str)> {
        params(extra).map(|_| ())
    }

    fn params(extra: Value) -> Result<GenParams, (StatusCode, String, &'static str)> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        req.common
            .params("reply in JSON", 3, 2048, 1000, None)
            .map_err(|e| (e.status, e.message, e.code))
    }

    #[test]
    fn penalties_and_logit_bias_reach_the_sampler_in_canonical_form() {
        let p = params(json!({
            "presence_penalty": 0.5, "frequency_penalty": -0.0,
            "logit_bias": {"999": -100, "7": 2.5, "0": 0}
        }))
        .unwrap()
        .sampling;
        assert_eq!(p.presence_penalty, 0.5);
        // -0 becomes 0: a receipt has one encoding per value.
        assert_eq!(p.frequency_penalty.to_bits(), 0);
        assert_eq!(p.logit_bias, vec![(0, 0.0), (7, 2.5), (999, -100.0)]);
        assert!(p.validate_for_vocab(1000).is_ok());
        // JSON mode, when the prompt mentions JSON (as OpenAI requires).
        let json = json!({"response_format": {"type": "json_object"}});
        assert!(params(json.clone()).unwrap().sampling.json_object);
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let e = req.common.params("hi", 3, 2048, 1000, None).unwrap_err();
        assert!(
            e.message.contains("must contain the word 'json'"),
            "{}",
            e.message
        );
        let (_, msg, _) = params(json!({"response_format": {"type": "xml"}})).unwrap_err();
        assert!(msg.starts_with("response_format must be"), "{msg}");
        // Left out: nothing adjusts the logits, so the receipt stays version 1.
        assert!(!params(json!({})).unwrap().sampling.adjusts_logits());
        let many: serde_json::Map<String, Value> =
            (0..301).map(|i| (i.to_string(), json!(1))).collect();
        for (bad, says) in [
            (
                json!({"presence_penalty": 2.5}),
                "presence_penalty must be between -2 and 2",
            ),
            (
                json!({"frequency_penalty": -3}),
                "frequency_penalty must be between -2 and 2",
            ),
            (
                json!({"logit_bias": {"1000": 1}}),
                "not a token id of this model (0..1000)",
            ),
            (json!({"logit_bias": {"x": 1}}), "not a token id"),
            (json!({"logit_bias": {"-1": 1}}), "not a token id"),
            (json!({"logit_bias": {"5": 101}}), "between -100 and 100"),
            (json!({"logit_bias": {"5": "high"}}), "between -100 and 100"),
            (
                json!({"logit_bias": {"5": 1, "05": 2}}),
                "names a token id twice",
            ),
            (json!({"logit_bias": [1, 2]}), "must be an object"),
            (json!({"logit_bias": Value::Object(many)}), "at most 300"),
        ] {
            let (status, msg, _) = params(bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(msg.contains(says), "{bad}: {msg}");
        }
    }

    #[test]
    fn unsupported_features_are_refused_and_unknown_fields_named() {
        // Known parameters, ignored ones and features left at their "off" values pass.
        for ok in [
            json!({"temperature": 0.5, "seed": 1, "stop": ["x"], "n": 1}),
            json!({"user": "u", "metadata": {"a": "b"}, "store": false}),
            json!({"stream_options": {"include_usage": true}}),
            json!({"logprobs": false, "presence_penalty": 0.5, "frequency_penalty": 0.0}),
            json!({"tools": [], "tool_choice": "none", "logit_bias": {"42": 5}}),
            json!({"response_format": {"type": "text"}, "best_of": 1, "suffix": ""}),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
        // Asking for a feature this gateway does not have is a 400 naming it.
        for (bad, name) in [
            (json!({"echo": true}), "echo"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (json!({"best_of": 3}), "best_of"),
        ] {
            let (status, msg, code) = check(bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(code, "unsupported_parameter", "{bad}");
            assert!(msg.starts_with(name), "{bad}: {msg}");
        }
        // A field OpenAI does not know either is named, as OpenAI does.
        let (status, msg, code) = check(json!({"temprature": 1})).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code, "unknown_parameter");
        assert_eq!(msg, "Unrecognized request argument supplied: temprature");
    }

    /// A chat request from JSON text (so object members keep their order, as over HTTP).
    fn chat(text: &str) -> ChatRequest {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn json_schema_response_formats_compile_in_property_order() {
        let req = chat(
            r#"{"model": "m", "messages": [], "response_format": {"type": "json_schema",
                "json_schema": {"name": "city_info", "strict": true, "schema": {"type": "object",
                "properties": {"name": {"type": "string"}, "country": {"type": "string"},
                "population": {"type": "integer"}},
                "required": ["name", "country", "population"], "additionalProperties": false}}}}"#,
        );
        // No "json" in the prompt needed: the schema's layout leaves no room for whitespace.
        let p = req
            .common
            .params("hi", 3, 2048, 1000, None)
            .unwrap()
            .sampling;
        let schema = p.json_schema.expect("a schema");
        assert!(!p.json_object);
        assert_eq!(
            schema.canonical(),
            r#"{"object":[["name","string"],["country","string"],["population","integer"]]}"#
        );
        let out = br#"{"name": "Paris", "country": "France", "population": 2100000}"#;
        let st = schema.after(&schema.start(), out).unwrap();
        assert!(schema.is_complete(&st));
        for (bad, says) in [
            (r#"{"type": "json_schema"}"#, "needs a json_schema object"),
            (
                r#"{"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}"#,
                "name must be",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "a b", "schema": {"type": "object"}}}"#,
                "name must be",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x"}}"#,
                "needs a schema",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string"}}}"#,
                "top level must be of type object",
            ),
            (
                r#"{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}}}"#,
                "\"format\" is not supported",
            ),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "response_format": {bad}}}"#
            ));
            let e = req.common.params("hi", 3, 2048, 1000, None).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn tools_become_a_call_grammar_and_instructions() {
        let tools = r#"[{"type": "function", "function": {"name": "get_weather",
            "description": "Weather in a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}}}},
            {"type": "function", "function": {"name": "now"}}]"#;
        let with = |choice: &str| {
            chat(&format!(
                r#"{{"model": "m", "messages": [], "tools": {tools}{choice}}}"#
            ))
        };
        // The default ("auto"): a call or plain text.
        let req = with("");
        let t = req.common.tools().unwrap().expect("tools");
        assert!(matches!(t.choice, ToolChoice::Auto));
        assert!(t.grammar.canonical().starts_with(r#"{"orText":"#));
        let text = t.instructions();
        assert!(text.contains(r#"{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city""#), "{text}");
        assert!(
            text.contains(r#"{"name":"now","parameters":{"type":"object","properties":{}}}"#),
            "{text}"
        );
        let p = req
            .common
            .params("hi", 3, 2048, 1000, Some(&t))
            .unwrap()
            .sampling;
        assert_eq!(p.json_schema.as_ref(), Some(&t.grammar));
        // A named function: only its calls.
        let t = with(r#", "tool_choice": {"type": "function", "function": {"name": "now"}}"#)
            .common
            .tools()
            .unwrap()
            .unwrap();
        let g = &t.grammar;
        let call = br#"{"name": "now", "arguments": {}}"#;
        assert!(g.is_complete(&g.after(&g.start(), call).unwrap()));
        assert!(g.after(&g.start(), br#"{"name": "get_weather""#).is_none());
        assert!(g.after(&g.start(), b"Hello").is_none());
        // "required": any tool's call, never text.
        let t = with(r#", "tool_choice": "required""#)
            .common
            .tools()
            .unwrap()
            .unwrap();
        let g = &t.grammar;
        let call = br#"{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}"#;
        assert!(g.is_complete(&g.after(&g.start(), call).unwrap()));
        assert!(g.after(&g.start(), b"Hello").is_none());
        // "none" and an empty list: no tools.
        assert!(with(r#", "tool_choice": "none""#)
            .common
            .tools()
            .unwrap()
            .is_none());
        assert!(chat(r#"{"model": "m", "messages": [], "tools": []}"#)
            .common
            .tools()
            .unwrap()
            .is_none());
        // Parsing the answer back: the arguments exactly as written.
        assert_eq!(
            tool_call(std::str::from_utf8(call).unwrap()),
            Some((
                "get_weather".into(),
                r#"{"city": "Oslo", "unit": "c"}"#.into()
            ))
        );
        assert_eq!(tool_call("Hello"), None);
        assert_eq!(tool_call(r#"{"name": "now", "arguments": {"#), None);
        assert_eq!(tool_call(r#"{"name":"now","arguments":{}}"#), None);
        // Bad tool definitions and choices are 400s that say why.
        for (extra, says) in [
            (r#", "tool_choice": "sometimes""#, "tool_choice must be"),
            (
                r#", "tool_choice": {"type": "function", "function": {"name": "later"}}"#,
                "not in tools",
            ),
            (r#", "tool_choice": 5"#, "tool_choice must be"),
            (
                r#", "tool_choice": {"function": {"name": "now"}}"#,
                "tool_choice must be",
            ),
            (
                r#", "response_format": {"type": "json_object"}"#,
                "both constrain",
            ),
        ] {
            let req = with(extra);
            let e = req
                .common
                .tools()
                .and_then(|t| req.common.params("json", 3, 2048, 1000, t.as_ref()))
                .unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
        for (tools, says) in [
            (r#"{"type": "function"}"#, "must be a list"),
            (r#"[{"type": "function"}]"#, "tools[0] must be"),
            (
                r#"[{"type": "function", "function": {"name": "a.b"}}]"#,
                "name must be",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]"#,
                "twice",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]"#,
                "must be of type object",
            ),
            (
                r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"$ref": "y"}}}}}]"#,
                "does not name an entry",
            ),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "tools": {tools}}}"#
            ));
            let e = req.common.tools().err().expect(tools);
            assert!(e.message.contains(says), "{tools}: {}", e.message);
        }
        // With "none" the tools are unused, but a bad definition is still an error.
        let req = chat(
            r#"{"model": "m", "messages": [], "tool_choice": "none", "tools": [{"type": "function",
                "function": {"name": "f", "parameters": {"type": "string"}}}]}"#,
        );
        assert!(req.common.tools().is_err());
        // Without tools, tool_choice may only say none or auto.
        for (choice, ok) in [
            (r#""none""#, true),
            (r#""auto""#, true),
            (r#""required""#, false),
        ] {
            let req = chat(&format!(
                r#"{{"model": "m", "messages": [], "tool_choice": {choice}}}"#
            ));
            assert_eq!(req.common.tools().is_ok(), ok, "{choice}");
        }
        // Earlier calls in the conversation are shown to the model as it writes them.
        let calls = json!([{"id": "call_1", "type": "function",
                            "function": {"name": "now", "arguments": "{}"}}]);
        assert_eq!(
            past_calls(&calls).unwrap(),
            r#"{"name": "now", "arguments": {}}"#
        );
        assert!(past_calls(&json!([{"function": {"name": "now"}}])).is_err());
    }

    #[test]
    fn n_is_one_to_eight_choices() {
        let n = |v: Value| {
            let c: Common = serde_json::from_value(v).unwrap();
            c.n().map_err(|e| (e.status, e.message))
        };
        assert_eq!(n(json!({})), Ok(1));
        assert_eq!(n(json!({"n": 1})), Ok(1));
        assert_eq!(n(json!({"n": 8})), Ok(MAX_CHOICES));
        for bad in [0, 9] {
            let (status, msg) = n(json!({ "n": bad })).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(msg, format!("n must be between 1 and 8, got {bad}"));
        }
    }

    #[test]
    fn logprobs_follow_openais_shapes_and_limits() {
        let top = |chat: bool, extra: Value| {
            let c: Common = serde_json::from_value(extra).unwrap();
            c.top_logprobs(chat).map_err(|e| (e.status, e.message))
        };
        // Chat: a bool, alternatives only with it, at most 20.
        assert_eq!(top(true, json!({})), Ok(None));
        assert_eq!(top(true, json!({"logprobs": false})), Ok(None));
        assert_eq!(
            top(true, json!({"logprobs": false, "top_logprobs": 0})),
            Ok(None)
        );
        assert_eq!(top(true, json!({"logprobs": true})), Ok(Some(0)));
        assert_eq!(
            top(true, json!({"logprobs": true, "top_logprobs": 20})),
            Ok(Some(20))
        );
        for bad in [
            json!({"logprobs": true, "top_logprobs": 21}),
            json!({"logprobs": true, "top_logprobs": -1}),
            json!({"logprobs": true, "top_logprobs": "3"}),
            json!({"top_logprobs": 2}),
            json!({"logprobs": 3}),
            json!({"logprobs": "yes"}),
        ] {
            let (status, msg) = top(true, bad.clone()).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(msg.contains("logprobs"), "{bad}: {msg}");
        }
        // Completions: a count up to 5; top_logprobs is not theirs.
        assert_eq!(top(false, json!({"logprobs": 0})), Ok(Some(0)));
        assert_eq!(top(false, json!({"logprobs": 5})), Ok(Some(5)));
        assert_eq!(top(false, json!({"logprobs": null})), Ok(None));
        assert_eq!(
            top(false, json!({"logprobs": false})),
            Ok(None),
            "off, as before"
        );
        assert_eq!(
            top(true, json!({"logprobs": 0})),
            Ok(None),
            "off, as before"
        );
        for bad in [
            json!({"logprobs": 6}),
            json!({"logprobs": true}),
            json!({"top_logprobs": 1}),
        ] {
            assert!(top(false, bad.clone()).is_err(), "{bad}");
        }
    }
}
