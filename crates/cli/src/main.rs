//! # deai — the command-line front door
//!
//! Owns: argument parsing, user-facing output and exit codes. Everything it does is a call
//! into a library crate; it must hold no logic those crates would need, and nothing
//! depends on it. Each `*_cmd.rs` owns one command's flags, the call it wires, and its
//! printing.
//!
//! Exit codes: 0 success, 1 runtime error (bad model file, context overflow...), 2 usage error
//! (clap's convention: unknown flag, invalid value, non-UTF-8 argument).

#[macro_use]
mod output;
mod bench;
mod bench_attacks;
mod bench_explorer;
mod bench_network;
mod bench_proof;
mod bench_sampler;
mod bench_verify_load;
mod calibrate_cmd;
mod chain_cmd;
mod devnet_cmd;
mod model_cmd;
mod node_cmd;
mod proof_cmd;
mod run_cmd;
mod status_cmd;
mod train_cmd;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub use model_cmd::{engine_at, load_engine, resolve_model, ModelArgs};

/// The chat request the network benches send through the gateway.
#[derive(Args)]
pub struct ChatRequestArgs {
    /// Sampler seed of every request (greedy: temperature 0).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The user message (the default answer runs to max_tokens).
    #[arg(
        long,
        default_value = "Explain in a few sentences how a lighthouse works."
    )]
    pub prompt: String,
}

#[derive(Parser)]
#[command(
    name = "deai",
    version,
    about = "Verifiable decentralized AI: run, prove and check models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a reply to one prompt with the bundled model (fetched on first use).
    Run(run_cmd::RunArgs),
    /// Interactive multi-turn chat (earlier turns are reused from the prefix cache).
    Chat(run_cmd::ChatArgs),
    /// Print the token ids of TEXT (special tokens such as <|im_start|> are parsed).
    Tokenize(run_cmd::TokenizeArgs),
    /// Fetch or list models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Benchmarks that print ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Worker signing keys for receipts.
    #[command(subcommand)]
    Keys(proof_cmd::KeysCmd),
    /// Verify a receipt offline with the local model (exit 0 accept, 1 reject, 2 error).
    Verify(proof_cmd::VerifyArgs),
    /// Pretty-print a receipt.
    Inspect(proof_cmd::InspectArgs),
    /// Measure honest cross-profile activation gaps (vs llama.cpp) and derive thresholds.
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// The replicated ledger: create a chain, run validators, show status.
    #[command(subcommand)]
    Chain(chain_cmd::ChainCmd),
    /// Sign and submit a ledger transaction to a node, and wait for finality.
    Tx(chain_cmd::TxArgs),
    /// The whole network in one process on loopback: 4 validators, workers with the real
    /// model, an OpenAI-compatible gateway (`--demo` sends one request and follows it).
    Devnet(devnet_cmd::DevnetArgs),
    /// Run network roles (worker, validator, gateway; any combination) against a chain.
    Node(node_cmd::NodeArgs),
    /// The network's economics: validators, workers (earnings, slashes, revenue per
    /// compute-hour), jobs by status, supply, treasury and burns.
    Status(status_cmd::StatusArgs),
    /// Train a model: DiLoCo rounds across workers whose contributions are verified by
    /// re-execution before they are merged (`--local`: the single-worker baseline).
    Train(train_cmd::TrainArgs),
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) and verify its SHA-256.
    Fetch,
    /// Show installed models with their ids (SHA-256 of the weights file).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a model's configuration, id and this machine's kernel profile.
    Info {
        #[arg(long)]
        model: Option<String>,
    },
    /// Write a trained checkpoint as a GGUF model that `deai run` serves and `deai verify`
    /// verifies.
    Export(train_cmd::ExportArgs),
}

fn main() {
    // Warnings of the network roles and the chain go to stderr; RUST_LOG overrides
    // (e.g. RUST_LOG=deai_node=info shows every verdict and capability challenge).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,deai_node=warn,deai_chain=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        // Whoever read our output stopped (`deai tokenize ... | head`): nothing went wrong.
        let closed_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(a) => run_cmd::run(a),
        Cmd::Chat(a) => run_cmd::chat(a),
        Cmd::Tokenize(a) => run_cmd::tokenize(a),
        Cmd::Model(ModelCmd::Fetch) => model_cmd::fetch(),
        Cmd::Model(ModelCmd::List { json }) => model_cmd::list(json),
        Cmd::Model(ModelCmd::Info { model }) => model_cmd::info(model.as_deref()),
        Cmd::Model(ModelCmd::Export(a)) => train_cmd::export(a),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Keys(k) => proof_cmd::keys(k),
        Cmd::Verify(a) => proof_cmd::verify(a),
        Cmd::Inspect(a) => proof_cmd::inspect(a),
        Cmd::Calibrate(a) => calibrate_cmd::calibrate(a),
        Cmd::Chain(c) => chain_cmd::chain(c),
        Cmd::Tx(a) => chain_cmd::tx(a),
        Cmd::Devnet(a) => devnet_cmd::devnet(a),
        Cmd::Node(a) => node_cmd::node(a),
        Cmd::Status(a) => status_cmd::status(a),
        Cmd::Train(a) => match a.cmd.clone() {
            Some(train_cmd::TrainSub::Audit(x)) => train_cmd::audit(x),
            None => train_cmd::train(a),
        },
    }
}
