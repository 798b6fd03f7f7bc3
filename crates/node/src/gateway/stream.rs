//! Rendering the workers' output as OpenAI answers: one JSON body once every choice is done,
//! or server-sent events as tokens arrive (chunks per choice, a final chunk with `usage` and
//! the `deai` receipt field, then `[DONE]`); token log-probabilities in chat's and
//! completions' shapes; tool calls held back until they are known to be one.
//!
//! All text here comes from token ids ([`super::attempt`]): a JSON answer is the text of the
//! one attempt whose receipt signs its ids, never a failed attempt's.

use super::attempt::Out;
use super::config::CatalogEntry;
use super::openai::{tool_call, tool_call_json, Reply};
use crate::{http_error, HttpError};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deai_engine::sampler::TokenLogprobs;
use deai_engine::tokenizer::Tokenizer;
use deai_engine::StopReason;
use deai_ledger::Address;
use deai_types::Hash256;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Answers a request whose choices run as `runs` (each choice's request id and the stream
/// of its output), in the shape `reply` asks for; `prompt_chars` is the length of a
/// completion's prompt (where its logprob text offsets start).
pub(super) async fn render(
    model: &CatalogEntry,
    runs: Vec<(Hash256, tokio::sync::mpsc::Receiver<Out>)>,
    reply: Reply,
    prompt_chars: usize,
) -> Result<Response, HttpError> {
    let Reply {
        top_logprobs,
        stream,
        chat,
        echo,
        tools,
        ..
    } = reply;
    let n = runs.len();
    let first = runs[0].0;
    let id = if chat {
        format!("chatcmpl-{first}")
    } else {
        format!("cmpl-{first}")
    };
    let created = now_secs();
    let name = model.name.clone();
    let ids: Vec<String> = runs.iter().map(|(r, _)| r.to_string()).collect();
    let receipt_header = [("x-deai-receipt", ids.join(","))];
    // One renderer per choice: completions count text offsets per choice.
    let renders: Vec<_> = (0..n)
        .map(|_| {
            let tok = model.tokenizer.clone();
            logprobs_renderer(tok, top_logprobs.is_some(), chat, prompt_chars)
        })
        .collect();
    if !stream {
        // Read every choice's channel at once: a choice left unread would stall its worker.
        let answers =
            futures::future::join_all(runs.into_iter().map(|(request, rx)| collect(request, rx)))
                .await;
        let mut choices = Vec::new();
        let mut done = Vec::new();
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for (i, a) in answers.into_iter().enumerate() {
            let a = a?;
            let lp = renders[i](&a.logprobs);
            let finish = finish_reason(a.stop_reason);
            let call = tools.then(|| tool_call(&a.text)).flatten();
            choices.push(if let Some((name, args)) = call {
                let call = tool_call_json(&a.request, &name, &args);
                json!({ "index": i,
                        "message": { "role": "assistant", "content": null, "tool_calls": [call] },
                        "logprobs": lp, "finish_reason": "tool_calls" })
            } else if chat {
                json!({ "index": i, "message": { "role": "assistant", "content": a.text },
                        "logprobs": lp, "finish_reason": finish })
            } else {
                let text = format!("{}{}", echo.as_deref().unwrap_or(""), a.text);
                json!({ "index": i, "text": text, "logprobs": lp, "finish_reason": finish })
            });
            prompt_tokens = a.prompt_tokens;
            completion_tokens += a.output_tokens;
            done.push((a.request, a.job, a.worker));
        }
        let body = json!({
            "id": id, "object": if chat { "chat.completion" } else { "text_completion" },
            "created": created, "model": name, "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
            "deai": deai_field(&done),
        });
        return Ok((receipt_header, Json(body)).into_response());
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |i: usize,
                      delta: Value,
                      lps: &[(u32, TokenLogprobs)],
                      finish: Option<&str>,
                      extra: Option<(Value, Value)>| {
        let lp = if lps.is_empty() {
            Value::Null
        } else {
            renders[i](lps)
        };
        let choice = if chat {
            json!({ "index": i, "delta": delta, "logprobs": lp, "finish_reason": finish })
        } else {
            json!({ "index": i, "text": delta.get("content").cloned().unwrap_or(json!("")),
                    "logprobs": lp, "finish_reason": finish })
        };
        let mut c = json!({ "id": id, "object": object, "created": created, "model": name,
                            "choices": [choice] });
        if let Some((usage, d)) = extra {
            c["usage"] = usage;
            c["deai"] = d;
        }
        Event::default().data(c.to_string())
    };
    // Chat opens each choice with its role; an echoing completion with the prompt.
    let opening = match (chat, echo) {
        (true, _) => Some(json!({ "role": "assistant", "content": "" })),
        (false, Some(p)) => Some(json!({ "content": p })),
        (false, None) => None,
    };
    let events = stream_events(runs, chunk, opening, tools);
    Ok((receipt_header, Sse::new(events)).into_response())
}

/// Renders token log-probabilities as OpenAI does: chat's `{"content": [{token, logprob,
/// bytes, top_logprobs}]}`, or completions' `{tokens, token_logprobs, top_logprobs,
/// text_offset}` (offsets in characters from the start of the prompt, `prompt_chars` being
/// its length, as OpenAI counts them; counted across a stream's chunks).
/// `null` when the request did not ask for logprobs.
fn logprobs_renderer(
    tok: Arc<Tokenizer>,
    asked: bool,
    chat: bool,
    prompt_chars: usize,
) -> impl Fn(&[(u32, TokenLogprobs)]) -> Value + Send + Sync + 'static {
    let offset = Mutex::new(prompt_chars);
    // JSON has no infinity: OpenAI writes an impossible token's logprob as -9999.
    let num = |x: f32| {
        if x.is_finite() {
            json!(x)
        } else {
            json!(-9999.0)
        }
    };
    move |lps| {
        if !asked {
            return Value::Null;
        }
        let view = |id: u32| {
            let bytes = tok.token_bytes(id).unwrap_or_default();
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        if chat {
            let content: Vec<Value> = lps
                .iter()
                .map(|(id, lp)| {
                    let (text, bytes) = view(*id);
                    let top: Vec<Value> = lp
                        .top
                        .iter()
                        .map(|(alt, l)| {
                            let (t, b) = view(*alt);
                            json!({ "token": t, "logprob": num(*l), "bytes": b })
                        })
                        .collect();
                    json!({ "token": text, "logprob": num(lp.logprob), "bytes": bytes,
                            "top_logprobs": top })
                })
                .collect();
            return json!({ "content": content, "refusal": null });
        }
        let mut off = offset.lock().unwrap_or_else(|e| e.into_inner());
        let (mut tokens, mut values, mut tops, mut offsets) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, lp) in lps {
            let (text, _) = view(*id);
            offsets.push(*off);
            *off += text.chars().count();
            tokens.push(text);
            values.push(num(lp.logprob));
            let top: serde_json::Map<String, Value> = lp
                .top
                .iter()
                .map(|(alt, l)| (view(*alt).0, num(*l)))
                .collect();
            tops.push(Value::Object(top));
        }
        json!({ "tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                "text_offset": offsets })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(s: StopReason) -> &'static str {
    match s {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// One choice, read to its end.
struct Answer {
    request: Hash256,
    text: String,
    logprobs: Vec<(u32, TokenLogprobs)>,
    job: Hash256,
    stop_reason: StopReason,
    prompt_tokens: usize,
    output_tokens: usize,
    worker: Address,
}

async fn collect(
    request: Hash256,
    mut rx: tokio::sync::mpsc::Receiver<Out>,
) -> Result<Answer, HttpError> {
    loop {
        match rx.recv().await {
            // Only the successful attempt's answer, as a whole, counts.
            Some(Out::Text { .. }) => {}
            Some(Out::Done {
                job,
                stop_reason,
                prompt_tokens,
                output_tokens,
                worker,
                text,
                logprobs,
            }) => {
                return Ok(Answer {
                    request,
                    text,
                    logprobs,
                    job,
                    stop_reason,
                    prompt_tokens,
                    output_tokens,
                    worker,
                })
            }
            Some(Out::Failed(e)) => {
                return Err(http_error(StatusCode::BAD_GATEWAY, e).with_code("worker_failed"))
            }
            None => return Err(http_error(StatusCode::BAD_GATEWAY, "request dropped")),
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens })
}

/// The answer's `deai` field: the first choice's request (= receipt id), job and worker, and
/// with several choices, `choices` listing each one's.
fn deai_field(done: &[(Hash256, Hash256, Address)]) -> Value {
    let one = |(request, job, worker): &(Hash256, Hash256, Address)| {
        json!({ "receipt_id": request, "job": job, "worker": hex::encode(worker),
                "receipt_url": format!("/v1/receipts/{request}") })
    };
    let mut d = done.first().map(one).unwrap_or(Value::Null);
    if done.len() > 1 {
        d["choices"] = done.iter().map(one).collect();
    }
    d
}

fn worker_failed(message: &str) -> Event {
    Event::default().data(
        json!({ "error": { "message": message, "type": "server_error", "code": "worker_failed" } })
            .to_string(),
    )
}

type ChunkFn = dyn Fn(usize, Value, &[(u32, TokenLogprobs)], Option<&str>, Option<(Value, Value)>) -> Event
    + Send
    + Sync;

/// What a stream of `n` choices has seen so far.
struct StreamState {
    merged: futures::stream::SelectAll<futures::stream::BoxStream<'static, (usize, Out)>>,
    /// Opening chunks still to send, one per choice (chat: the role; an echoing completion:
    /// the prompt).
    opening: std::collections::VecDeque<usize>,
    requests: Vec<Hash256>,
    done: Vec<Option<(Hash256, Hash256, Address)>>,
    prompt_tokens: usize,
    completion_tokens: usize,
    ended: bool,
    /// With tools, per choice: the text held back while it may be a tool call (empty, or
    /// starting with `{`); `None` once it is plain text, which streams as it comes.
    held: Vec<Option<String>>,
    /// Events to send before reading more output.
    pending: std::collections::VecDeque<Event>,
}

/// Turns the dispatchers' output into SSE events: a role chunk per choice, content chunks
/// (each naming its choice's `index`), a final chunk per choice with its finish reason (the
/// last one to finish also carries `usage` and `deai` for all of them), then `[DONE]`.
fn stream_events(
    runs: Vec<(Hash256, tokio::sync::mpsc::Receiver<Out>)>,
    chunk: impl Fn(usize, Value, &[(u32, TokenLogprobs)], Option<&str>, Option<(Value, Value)>) -> Event
        + Send
        + Sync
        + 'static,
    open_delta: Option<Value>,
    tools: bool,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let chunk: Arc<ChunkFn> = Arc::new(chunk);
    let n = runs.len();
    let requests = runs.iter().map(|(r, _)| *r).collect();
    let merged = futures::stream::select_all(runs.into_iter().enumerate().map(|(i, (_, rx))| {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
            .map(move |o| (i, o))
            .boxed()
    }));
    let state = StreamState {
        merged,
        opening: if open_delta.is_some() {
            (0..n).collect()
        } else {
            Default::default()
        },
        requests,
        done: vec![None; n],
        prompt_tokens: 0,
        completion_tokens: 0,
        ended: false,
        held: vec![tools.then(String::new); n],
        pending: Default::default(),
    };
    let open_delta = Arc::new(open_delta.unwrap_or_default());
    futures::stream::unfold(state, move |mut st| {
        let chunk = chunk.clone();
        let open_delta = open_delta.clone();
        async move {
            if let Some(i) = st.opening.pop_front() {
                return Some((Ok(chunk(i, (*open_delta).clone(), &[], None, None)), st));
            }
            loop {
                if let Some(ev) = st.pending.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.ended {
                    return None;
                }
                match st.merged.next().await {
                    Some((i, Out::Text { text, logprobs })) => match &mut st.held[i] {
                        Some(buf) => {
                            buf.push_str(&text);
                            if !buf.is_empty() && !buf.starts_with('{') {
                                // Plain text: send what was held, then stream.
                                let t = std::mem::take(buf);
                                st.held[i] = None;
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "content": t }),
                                    &[],
                                    None,
                                    None,
                                ));
                            }
                        }
                        None => st.pending.push_back(chunk(
                            i,
                            json!({ "content": text }),
                            &logprobs,
                            None,
                            None,
                        )),
                    },
                    Some((
                        i,
                        Out::Done {
                            job,
                            stop_reason,
                            prompt_tokens,
                            output_tokens,
                            worker,
                            text,
                            ..
                        },
                    )) => {
                        st.done[i] = Some((st.requests[i], job, worker));
                        st.prompt_tokens = prompt_tokens;
                        st.completion_tokens += output_tokens;
                        let mut finish = finish_reason(stop_reason);
                        // Nothing of a held-back choice was sent: its answer is the text of
                        // the ids its receipt signs.
                        if st.held[i].take().is_some() {
                            let buf = text;
                            if let Some((name, args)) = tool_call(&buf) {
                                let mut call = tool_call_json(&st.requests[i], &name, &args);
                                call["index"] = json!(0);
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "tool_calls": [call] }),
                                    &[],
                                    None,
                                    None,
                                ));
                                finish = "tool_calls";
                            } else if !buf.is_empty() {
                                // A call cut short: the text as it is.
                                st.pending.push_back(chunk(
                                    i,
                                    json!({ "content": buf }),
                                    &[],
                                    None,
                                    None,
                                ));
                            }
                        }
                        let extra = st.done.iter().all(Option::is_some).then(|| {
                            st.ended = true;
                            let done: Vec<_> = st.done.iter().flatten().copied().collect();
                            (
                                usage(st.prompt_tokens, st.completion_tokens),
                                deai_field(&done),
                            )
                        });
                        st.pending
                            .push_back(chunk(i, json!({}), &[], Some(finish), extra));
                    }
                    Some((_, Out::Failed(e))) => {
                        st.ended = true;
                        st.pending.push_back(worker_failed(&e));
                    }
                    // Every channel closed, yet a choice never finished (its dispatcher is gone).
                    None => {
                        st.ended = true;
                        st.pending.push_back(worker_failed("request dropped"));
                    }
                }
            }
        }
    })
    .chain(futures::stream::once(async {
        Ok(Event::default().data("[DONE]"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model;

    #[test]
    fn several_choices_list_every_receipt() {
        let a = (Hash256([1; 32]), Hash256([2; 32]), [3u8; 32]);
        let b = (Hash256([4; 32]), Hash256([5; 32]), [6u8; 32]);
        let one = deai_field(&[a]);
        assert_eq!(one["receipt_id"], json!(a.0));
        assert!(one.get("choices").is_none());
        let two = deai_field(&[a, b]);
        assert_eq!(
            two["receipt_id"],
            json!(a.0),
            "the first choice's, as with n = 1"
        );
        assert_eq!(two["choices"][1]["job"], json!(b.1));
        assert_eq!(two["choices"][1]["worker"], json!(hex::encode(b.2)));
    }

    #[test]
    fn logprobs_render_as_openai_writes_them() {
        let tok = Arc::new(tiny_model().tokenizer);
        let lps = vec![
            (
                10u32,
                TokenLogprobs {
                    logprob: -0.25,
                    top: vec![(10, -0.25), (11, f32::NEG_INFINITY)],
                },
            ),
            (
                12,
                TokenLogprobs {
                    logprob: -1.5,
                    top: vec![(13, -0.5), (12, -1.5)],
                },
            ),
        ];
        let text = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id).unwrap()).into_owned();
        let chat = logprobs_renderer(tok.clone(), true, true, 0)(&lps);
        let c = &chat["content"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["token"], json!(text(10)));
        assert_eq!(c[0]["logprob"], json!(-0.25));
        assert_eq!(c[0]["bytes"], json!(tok.token_bytes(10).unwrap()));
        // No infinity in JSON: an impossible alternative is -9999, as OpenAI writes it.
        assert_eq!(c[0]["top_logprobs"][1]["logprob"], json!(-9999.0));
        assert_eq!(c[1]["top_logprobs"][0]["token"], json!(text(13)));
        // Completions: parallel lists, offsets counted across chunks of one stream.
        let render = logprobs_renderer(tok.clone(), true, false, 7);
        let first = render(&lps[..1]);
        let second = render(&lps[1..]);
        assert_eq!(first["tokens"], json!([text(10)]));
        assert_eq!(first["token_logprobs"], json!([-0.25]));
        assert_eq!(
            first["text_offset"],
            json!([7]),
            "counted from the prompt's start"
        );
        assert_eq!(second["text_offset"], json!([7 + text(10).chars().count()]));
        assert_eq!(second["top_logprobs"][0][text(13)], json!(-0.5));
        // Not asked: null.
        assert_eq!(logprobs_renderer(tok, false, true, 0)(&lps), Value::Null);
    }
}
