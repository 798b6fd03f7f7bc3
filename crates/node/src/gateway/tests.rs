//! The gateway in front of lying workers, over HTTP on loopback (`gateway::tests`): a fake
//! chain node ([`FakeChain`]) and real workers on the tiny model whose [`Tamper`] lies about
//! the text of honest tokens, or streams other tokens and crashes. The client must read the
//! text of the ids the receipt signs, and never a splice of two workers' outputs.

use super::{CatalogEntry, Gateway, GatewayConfig};
use crate::proto::RunEvent;
use crate::worker::tests::{FakeChain, TestWorker, CHAIN, MODEL, PRICE};
use crate::worker::Tamper;
use deai_client::Signer;
use deai_engine::{Engine, OutputText};
use deai_types::Hash256;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-test";
/// An API key of a client that keeps its own key ([`CLIENT`]) and authorized the gateway.
const CLIENT_KEY: &str = "sk-own-key";
const CLIENT: deai_ledger::Address = [0xc1; 32];

/// What a lying worker claims its tokens say: a tool call the model never made.
const INVENTED: &str = r#"{"name": "transfer_funds", "arguments": {"to": "mallory"}}"#;

/// Streams honest tokens (and signs them) but says each one's text is [`INVENTED`].
#[derive(Debug)]
struct InventedText;

impl Tamper for InventedText {
    fn token(&self, _engine: &Engine, _index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        match event {
            RunEvent::Token {
                token, logprobs, ..
            } => vec![Some(RunEvent::Token {
                token,
                text: INVENTED.into(),
                logprobs,
            })],
            other => vec![Some(other)],
        }
    }
}

/// Streams `forged` in place of its first tokens, then crashes mid-stream.
#[derive(Debug)]
struct ForgeThenCrash {
    forged: u32,
}

impl Tamper for ForgeThenCrash {
    fn token(&self, _engine: &Engine, index: usize, event: RunEvent) -> Vec<Option<RunEvent>> {
        if index >= 3 {
            return vec![None];
        }
        match event {
            RunEvent::Token { logprobs, .. } => vec![Some(RunEvent::Token {
                token: self.forged,
                text: "Z".into(),
                logprobs,
            })],
            other => vec![Some(other)],
        }
    }
}

struct Net {
    chain: FakeChain,
    /// The gateway's own account.
    address: deai_ledger::Address,
    gateway: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn start(attempts: usize) -> Net {
    let chain = FakeChain::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(Signer::new(
        deai_proof::generate_key(),
        CHAIN,
        1,
        chain.ledger(),
    ));
    // The gateway's own account, which signs the escrows of clients that keep their keys.
    let gateway = Arc::new(Signer::new(
        deai_proof::generate_key(),
        CHAIN,
        1,
        chain.ledger(),
    ));
    let cfg = GatewayConfig {
        models: vec![CatalogEntry {
            name: "tiny".into(),
            id: MODEL,
            tokenizer: Arc::new(crate::testing::tiny_model().tokenizer),
            n_ctx: 512,
        }],
        api_keys: vec![(KEY.into(), client)],
        client_keys: vec![(CLIENT_KEY.into(), CLIENT)],
        signer: Some(gateway),
        attempts,
        worker_timeout: Duration::from_secs(30),
        dir: dir.path().to_path_buf(),
        require_qualified: false,
    };
    let address = cfg.signer.as_ref().unwrap().address();
    let router = Gateway::new(cfg, chain.ledger()).unwrap().router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Net {
        chain,
        address,
        gateway,
        _dir: dir,
        http,
    }
}

impl Net {
    async fn worker(&self, tamper: Option<Arc<dyn Tamper>>, price: u64) -> TestWorker {
        let w = TestWorker::start(&self.chain, tamper, Duration::from_secs(5)).await;
        self.chain.register(w.worker.address(), &w.url, price);
        w
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.gateway))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// The text the ids of `job`'s receipt (stored by `w`) make, as the engine makes it (with the
/// stop strings and token limit the receipt signs).
fn text_of_receipt(w: &TestWorker, job: &Value) -> String {
    let job: Hash256 = serde_json::from_value(job.clone()).unwrap();
    let r = w.receipt(&job);
    let tok = crate::testing::tiny_model().tokenizer;
    let mut out = OutputText::new(&r.stop, r.max_tokens as usize);
    for &t in &r.output_tokens {
        out.push(&tok, t);
    }
    assert_eq!(out.end(), Some(r.stop_reason));
    out.text()
}

/// The `data:` payloads of a server-sent event stream.
fn sse(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_put_words_in_its_tokens_mouth() {
    let net = start(1).await;
    let w = net.worker(Some(Arc::new(InventedText)), PRICE).await;
    let req = json!({ "model": "tiny", "prompt": "hello there", "max_tokens": 12, "seed": 3 });
    // One JSON answer: the text of the ids the receipt signs, not the worker's text.
    let r = net.post("/v1/completions", req.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, text_of_receipt(&w, &v["deai"]["job"]));
    assert!(!v.to_string().contains("mallory"), "{v}");
    // Streamed: every delta comes from the ids too.
    let mut req = req;
    req["stream"] = json!(true);
    let body = net.post("/v1/completions", req).await.text().await.unwrap();
    assert!(!body.contains("mallory"), "{body}");
    let mut streamed = String::new();
    let mut job = Value::Null;
    for d in sse(&body) {
        if d == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(&d).unwrap();
        assert!(c.get("error").is_none(), "{c}");
        streamed.push_str(c["choices"][0]["text"].as_str().unwrap_or(""));
        if !c["deai"].is_null() {
            job = c["deai"]["job"].clone();
        }
    }
    assert_eq!(streamed, text_of_receipt(&w, &job));
    // A chat with tools: the invented tool call is not the answer, in either form.
    let chat = json!({
        "model": "tiny", "max_tokens": 24, "seed": 5,
        "messages": [{ "role": "user", "content": "weather in Paris?" }],
        "tools": [{ "type": "function", "function": { "name": "get_weather",
            "parameters": { "type": "object",
                            "properties": { "city": { "type": "string" } } } } }],
    });
    for stream in [false, true] {
        let mut chat = chat.clone();
        chat["stream"] = json!(stream);
        let r = net.post("/v1/chat/completions", chat).await;
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(!body.contains("transfer_funds"), "{body}");
        assert!(!body.contains("mallory"), "{body}");
        if stream {
            let last: Value = sse(&body)
                .iter()
                .rev()
                .find_map(|d| serde_json::from_str(d).ok())
                .unwrap();
            assert!(!last["deai"]["job"].is_null(), "{body}");
            continue;
        }
        // The answer, a call or plain text, is the text of the signed ids.
        let v: Value = serde_json::from_str(&body).unwrap();
        let ids_text = text_of_receipt(&w, &v["deai"]["job"]);
        let m = &v["choices"][0]["message"];
        let answer = match m["tool_calls"][0]["function"].as_object() {
            Some(f) => format!(
                "{{\"name\": {}, \"arguments\": {}}}",
                json!(f["name"]),
                f["arguments"].as_str().unwrap()
            ),
            None => m["content"].as_str().unwrap().to_string(),
        };
        assert_eq!(answer, ids_text, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_failover_the_client_never_reads_a_splice_of_two_workers() {
    let net = start(2).await;
    let tok = crate::testing::tiny_model().tokenizer;
    let z = (0..512)
        .find(|&i| tok.token_bytes(i) == Some(b"Z".to_vec()))
        .unwrap();
    // The cheapest worker goes first: it streams forged tokens, then crashes; the honest
    // one is tried next.
    let forger = ForgeThenCrash { forged: z };
    let _liar = net.worker(Some(Arc::new(forger)), PRICE).await;
    let honest = net.worker(None, PRICE + 1).await;
    let req = json!({ "model": "tiny", "prompt": "hello there", "max_tokens": 12, "seed": 3,
                      "stream": true });
    // Streamed: the forged text already went out, and the honest output does not continue
    // it, so the stream ends with an error rather than a splice under the honest receipt.
    let body = net
        .post("/v1/completions", req.clone())
        .await
        .text()
        .await
        .unwrap();
    let mut streamed = String::new();
    let mut error = None;
    for d in sse(&body) {
        if d == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(&d).unwrap();
        if let Some(e) = c.get("error") {
            error = Some(e.to_string());
            continue;
        }
        assert!(c["deai"].is_null(), "no receipt may cover this answer: {c}");
        streamed.push_str(c["choices"][0]["text"].as_str().unwrap_or(""));
    }
    assert_eq!(streamed, "ZZZ", "{body}");
    let error = error.expect("the stream ends with an error");
    assert!(
        error.contains("differs") || error.contains("does not cover"),
        "{error}"
    );
    // One JSON answer (both workers failed once; the cheaper forger goes first again): only
    // the honest worker's text, whose receipt signs all of it.
    let mut req = req;
    req["stream"] = json!(false);
    let r = net.post("/v1/completions", req).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    let honest_text = text_of_receipt(&honest, &v["deai"]["job"]);
    assert!(
        !honest_text.starts_with("ZZZ"),
        "the test needs the honest text to differ from the forged one"
    );
    assert_eq!(text, honest_text);
}

/// Routing by the stake behind a receipt: the cheapest worker, whose free stake cannot cover
/// the job's collateral (its receipt would be refused on chain, the work unpaid), is passed
/// over for a dearer one that can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_routes_only_to_workers_whose_stake_backs_the_job() {
    let net = start(1).await;
    let broke = net.worker(None, PRICE).await;
    let backed = net.worker(None, PRICE * 2).await;
    {
        let mut st = net.chain.state.lock().unwrap();
        let w = st
            .workers
            .iter_mut()
            .find(|w| w["address"] == hex::encode(broke.worker.address()).as_str())
            .unwrap();
        w["stake"] = json!(50);
        w["worker"]["locked"] = json!(40);
    }
    let req = json!({ "model": "tiny", "prompt": "hello there", "max_tokens": 12, "seed": 3 });
    let r = net.post("/v1/completions", req).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let job: Hash256 = serde_json::from_value(v["deai"]["job"].clone()).unwrap();
    assert!(backed.worker.receipt_path(&job).exists(), "{v}");
    assert!(!broke.worker.receipt_path(&job).exists());
}

/// The escrows of the last request: the `OpenJob`s the fake chain was sent since `from`.
fn escrows(net: &Net, from: usize) -> Vec<deai_ledger::SignedTx> {
    net.chain.state.lock().unwrap().submitted[from..]
        .iter()
        .filter(|t| matches!(t.tx.kind, deai_ledger::TxKind::OpenJob { .. }))
        .cloned()
        .collect()
}

/// A request names its app (`X-Deai-App`), and a client that keeps its own key pays through
/// the allowance it gave the gateway: both reach the escrow the worker is handed, with room
/// for their fees on top of the worker's price, and the worker serves it. A client key
/// without an allowance, or a malformed app id, is refused before any worker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_clients_that_keep_their_keys_reach_the_escrow() {
    use deai_ledger::state::{escrow_for, max_surcharge_bps};
    use deai_ledger::TxKind;
    let net = start(1).await;
    let _w = net.worker(None, PRICE).await;
    let app = Hash256([0xab; 32]);
    // Past the worker's free tokens: it must see the escrow the gateway opened for the
    // client as paid, or it stops without a receipt.
    let req = json!({ "model": "tiny", "prompt": "hello there", "max_tokens": 40, "seed": 3 });
    let send = |key: &'static str, app: Option<&'static str>| {
        let mut r = net
            .http
            .post(format!("{}/v1/completions", net.gateway))
            .bearer_auth(key)
            .json(&req);
        if let Some(a) = app {
            r = r.header("x-deai-app", a);
        }
        r.send()
    };
    let seen = net.chain.state.lock().unwrap().submitted.len();
    let hex_app: &'static str = Box::leak(app.to_string().into_boxed_str());
    // An app the chain does not know is refused before any worker serves a token.
    let r = send(KEY, Some(hex_app)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no registered app"));
    assert_eq!(net.chain.state.lock().unwrap().submitted.len(), seen);
    net.chain.state.lock().unwrap().apps.push(app);
    let r = send(KEY, Some(hex_app)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let open = escrows(&net, seen);
    let TxKind::OpenJob {
        escrow,
        app: named,
        client,
        ..
    } = &open[0].tx.kind
    else {
        unreachable!()
    };
    assert_eq!((*named, *client), (Some(app), None));
    // The tiny tokenizer's prompt length is what the worker bills; the escrow covers the
    // worker's price for prompt + max_tokens with the surcharge room on top.
    let cost = deai_ledger::state::billable(*escrow, max_surcharge_bps());
    assert!(escrow_for(cost, max_surcharge_bps()) <= *escrow);
    assert!(*escrow > cost, "room for the fees on top");

    // A client key: refused while the client has not authorized the gateway...
    let r = send(CLIENT_KEY, None).await.unwrap();
    assert_eq!(r.status(), 402);
    let body = r.text().await.unwrap();
    assert!(body.contains("allows this gateway"), "{body}");
    // ...served once it has: the gateway signs, the client pays.
    net.chain
        .state
        .lock()
        .unwrap()
        .allowances
        .insert((CLIENT, net.address), 1_000_000);
    let seen = net.chain.state.lock().unwrap().submitted.len();
    let r = send(CLIENT_KEY, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let served = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        served > 16 || v["choices"][0]["finish_reason"] == "stop",
        "{v}"
    );
    let open = escrows(&net, seen);
    assert_eq!(open[0].tx.from, net.address);
    assert!(matches!(
        open[0].tx.kind,
        TxKind::OpenJob {
            client: Some(c),
            ..
        } if c == CLIENT
    ));
    let r = send(KEY, Some("not-hex")).await.unwrap();
    assert_eq!(r.status(), 400);
}
