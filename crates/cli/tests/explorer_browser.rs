//! The explorer in a real browser: `deai devnet` in a child process, then
//! `scripts/explorer_browser_test.py` drives Debian's headless Chromium through Selenium
//! against the UI the gateway serves at `/`: every page loads with live data and no console
//! errors, search and bad input give clear messages, keyboard navigation and phone/laptop
//! widths work, the playground streams an answer whose receipt gets verified and finalized
//! and can be downloaded, and when the devnet is killed the open page says the node is
//! unreachable. Screenshots of every page go to `target/test-artifacts/explorer/` (or
//! `$DEAI_ARTIFACTS/explorer/`).
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`) and Python's `selenium`; without them the test prints why and passes,
//! unless `DEAI_REQUIRE_BROWSER=1` (set by CI), which makes it fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const START_TIMEOUT: Duration = Duration::from_secs(180);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(900);

/// Why the browser checks cannot run here, if they cannot.
fn missing_browser() -> Option<String> {
    for exe in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !std::path::Path::new(exe).exists() {
            return Some(format!(
                "{exe} is missing: apt-get install chromium chromium-driver"
            ));
        }
    }
    match Command::new("python3")
        .args(["-c", "import selenium; print(selenium.__version__)"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "python3 cannot import selenium ({}): pip install selenium",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run python3: {e}")),
    }
}

/// The browser script and an emptied screenshot folder `target/test-artifacts/NAME` (or
/// under `$DEAI_ARTIFACTS`); `None` (skip) when the browser is missing and not required.
fn setup(name: &str) -> Option<(PathBuf, PathBuf)> {
    if let Some(why) = missing_browser() {
        if std::env::var("DEAI_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("DEAI_REQUIRE_BROWSER=1 but {why} (.ci/run installs them)");
        }
        eprintln!("skipping: {why}");
        return None;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("scripts/explorer_browser_test.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let artifacts = std::env::var_os("DEAI_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/test-artifacts"))
        .join(name);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    Some((script, artifacts))
}

#[test]
fn explorer_pages_and_playground_work_in_headless_chromium() {
    let Some((script, artifacts)) = setup("explorer") else {
        return;
    };

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let log_path = tmp.path().join("devnet.log");
    // The UI needs the models and at least one registered worker to be useful.
    let (devnet, info) = common::start_devnet(
        env!("CARGO_BIN_EXE_deai"),
        &dir,
        &log_path,
        START_TIMEOUT,
        |http, info| {
            let gateway = info["gateway"].as_str().unwrap_or_default();
            http.get(format!("{gateway}/v1/workers"))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|v| v["workers"].as_array().is_some_and(|w| !w.is_empty()))
        },
    );
    let gateway = info["gateway"].as_str().expect("devnet.json: gateway");
    let api_key = info["api_key"].as_str().expect("devnet.json: api_key");
    let model = info["model"].as_str().expect("devnet.json: model");
    eprintln!("gateway {gateway}");

    // A governance proposal with votes, for the governance pages: validator 0 proposes a
    // higher price floor, validators 1 and 2 vote yes (the votes may land after the short
    // devnet voting period; the page must show whatever the chain decided).
    let chain = info["chain"][0].as_str().expect("devnet.json: chain");
    let tx = |key: &str, args: &[&str], wait: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deai"));
        c.args(["tx", "--url", chain, "--key"])
            .arg(dir.join("keys").join(key))
            .args(if wait { &[][..] } else { &["--no-wait"][..] })
            .args(args);
        // The validators' own verifier roles sign with these keys too: a transaction of
        // theirs may hold the next nonce for a moment, so retry.
        for attempt in 0.. {
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                break;
            }
            assert!(
                attempt < 20 && (err.contains("already pending") || err.contains("nonce")),
                "deai tx {args:?}: {err}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    tx(
        "validator-0.key",
        &["propose", "--param", "price_floor", "--value", "2"],
        true,
    );
    for v in ["validator-1.key", "validator-2.key"] {
        tx(v, &["vote", "--proposal", "1", "--vote", "yes"], false);
    }

    let t1 = Instant::now();
    let pid = devnet.0.id().to_string();
    let (status, output) = common::run_python(
        &script,
        &[gateway, api_key, model, artifacts.to_str().unwrap(), &pid],
        &tmp.path().join("browser.log"),
        BROWSER_TIMEOUT,
    );
    println!("{output}");
    eprintln!(
        "browser checks took {:.1?}; screenshots in {}",
        t1.elapsed(),
        artifacts.display()
    );
    match status {
        Some(true) => {}
        Some(false) => panic!(
            "scripts/explorer_browser_test.py failed:\n{output}\n\
             devnet log (last lines):\n{}",
            common::log_tail(&log_path, 60)
        ),
        None => panic!(
            "scripts/explorer_browser_test.py did not finish within {BROWSER_TIMEOUT:?}:\n\
             {output}\ndevnet log (last lines):\n{}",
            common::log_tail(&log_path, 60)
        ),
    }
    // The script killed the devnet to check the unreachable-node state.
    let shots = std::fs::read_dir(&artifacts).unwrap().count();
    assert!(
        shots >= 10,
        "only {shots} screenshots in {}",
        artifacts.display()
    );
}

/// The explorer of a training coordinator: `deai train` over loopback HTTP with a cheating
/// worker, kept serving after its last round (`--linger`); the script checks the training
/// page (rounds, the cheater's rejection and its reason, the loss curve) at both widths.
#[test]
fn training_explorer_shows_rounds_rejections_and_the_loss_curve() {
    let Some((script, artifacts)) = setup("explorer-training") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("train.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut train = common::Killed(
        Command::new(env!("CARGO_BIN_EXE_deai"))
            .args(["train", "--corpus", "synthetic", "--preset", "tiny"])
            .args(["--workers", "2", "--inner-steps", "3", "--batch", "4"])
            .args([
                "--rounds",
                "3",
                "--cheater",
                "random-delta",
                "--linger",
                "900",
            ])
            .arg("--out")
            .arg(tmp.path().join("out"))
            .env("DEAI_HOME", tmp.path().join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let url = loop {
        if let Some(status) = train.0.try_wait().unwrap() {
            panic!(
                "`deai train` exited early ({status}):\n{}",
                common::log_tail(&log_path, 40)
            );
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let url = log
            .lines()
            .find_map(|l| l.strip_prefix("coordinator on "))
            .map(str::to_string);
        let done = url.as_ref().is_some_and(|u| {
            http.get(format!("{u}/train/v1/round"))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|v| v["done"] == true)
        });
        if done {
            break url.unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "training did not finish within 600 s:\n{}",
            common::log_tail(&log_path, 40)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let out = Command::new("python3")
        .arg(&script)
        .args([url.as_str(), "-", "-", artifacts.to_str().unwrap()])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the training page checks failed:\n{text}"
    );
    assert!(
        text.contains("rejection(s) shown") && !text.contains(", 0 rejection(s)"),
        "the cheater's rejection was not shown:\n{text}"
    );
}
