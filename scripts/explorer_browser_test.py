#!/usr/bin/env python3
"""Browser test of the deai explorer (the web UI a node serves at /).

Usage: explorer_browser_test.py BASE_URL API_KEY MODEL SCREENSHOT_DIR [DEVNET_PID]

Drives Debian's headless Chromium through Selenium 4 (driver given explicitly, so Selenium
Manager never downloads anything). Prints one line per passed check, "FAIL ..." for each
failed one, saves a PNG of every page into SCREENSHOT_DIR, and exits non-zero if any check
failed. With DEVNET_PID it last sends SIGTERM to that process and expects the open overview
to show the "node unreachable" banner.

EXPLORER_TEST_ALLOW_MISSING_ROUTES=1 tolerates 404s from routes the contract marks NEW
(/v1/search, /v1/account/*/txs, /v1/proposals, /v1/gateway/status); for development only.
"""
import base64
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (390, 844)
LAPTOP = (1366, 800)
NEW_ROUTE_404 = re.compile(r"/v1/(search\?|account/[0-9a-f]{64}/txs|proposals|gateway/status)")


class CheckFailed(Exception):
    pass


def ensure(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Explorer:
    def __init__(self, base, key, model, shots):
        self.base = base.rstrip("/")
        self.key = key
        self.model = model
        self.shots = shots
        self.failures = []
        self.passed = 0
        self.allowed_http = []  # URL substrings whose HTTP-error console lines the current check expects
        self.allow_missing = os.environ.get("EXPLORER_TEST_ALLOW_MISSING_ROUTES") == "1"
        self.tmp = tempfile.mkdtemp(prefix="deai-explorer-test-")
        self.downloads = os.path.join(self.tmp, "downloads")
        os.makedirs(self.downloads)
        self.driver = self._start()
        self.config = {}

    # ------------------------------------------------------------------ browser
    def _start(self):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
                  f"--user-data-dir={os.path.join(self.tmp, 'profile')}"):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {
            "download.default_directory": self.downloads,
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": False,
        })
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        d.set_page_load_timeout(60)
        try:
            d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})
        except WebDriverException:
            d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})
        return d

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def viewport(self, size):
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def open(self, route, fresh=False):
        """Navigate to #<route>. fresh: full page load instead of a hash change."""
        url = f"{self.base}/#{route}"
        if fresh or not self.driver.current_url.startswith(self.base):
            if fresh:  # a URL that differs only in its fragment would not reload the page
                self.driver.get("about:blank")
            self.driver.get(url)
        else:  # mark the current heading so that waiting sees the new page, not the old one
            self.js("""const h = document.querySelector('#view h1'); if (h) h.dataset.stale = '1';
                       if (location.hash === '#' + arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));
                       else location.hash = arguments[0];""", route)
        self.wait_loaded()

    def mark_stale(self):
        """Before a click that navigates: lets wait_loaded tell the next page from this one."""
        self.js("const h = document.querySelector('#view h1'); if (h) h.dataset.stale = '1';")

    def wait(self, fn, timeout, what, interval=0.25):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                v = fn()
                if v:
                    return v
            except WebDriverException as e:  # stale element during a re-render
                last = e
            time.sleep(interval)
        raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last.msg})" if last else ""))

    def wait_loaded(self, timeout=20):
        self.wait(lambda: self.js(
            "return !!document.querySelector('#view h1:not([data-stale])') && !document.querySelector('#view .loading, #view .loading-title')"),
            timeout, "the page to render")

    def heading(self):
        return self.js("const h = document.querySelector('#view h1'); return h ? h.textContent.trim() : ''")

    def text(self, css="#view"):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)

    def shot(self, name):
        path = os.path.join(self.shots, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
        d = self.driver
        try:
            m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = m.get("cssContentSize") or m["contentSize"]
            clip = {"x": 0, "y": 0, "width": int(size["width"]), "height": min(int(size["height"]), 9000), "scale": 1}
            data = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
            with open(path, "wb") as f:
                f.write(base64.b64decode(data["data"]))
        except WebDriverException:
            d.save_screenshot(path)
        return path

    def console_errors(self):
        """SEVERE browser console lines, minus the HTTP errors the current check expects."""
        bad = []
        for entry in self.driver.get_log("browser"):
            if entry.get("level") != "SEVERE":
                continue
            msg = entry.get("message", "")
            is404 = "status of 404" in msg
            http_error = "Failed to load resource: the server responded with a status of" in msg
            if http_error and any(s in msg for s in self.allowed_http):
                continue
            if is404 and self.allow_missing and NEW_ROUTE_404.search(msg):
                continue
            bad.append(msg)
        return bad

    # ------------------------------------------------------------------ API (direct, for expected values)
    def api(self, path, auth=False):
        req = urllib.request.Request(self.base + path)
        if auth:
            req.add_header("Authorization", "Bearer " + self.key)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    # ------------------------------------------------------------------ check runner
    def check(self, name, fn, *args, allow_http=()):
        self.allowed_http = list(allow_http)
        self.driver.get_log("browser")  # drop what earlier checks left
        try:
            detail = fn(*args)
            errors = self.console_errors()
            ensure(not errors, "browser console errors: " + " | ".join(errors))
        except (CheckFailed, WebDriverException, AssertionError, KeyError, ValueError, TypeError, OSError) as e:
            msg = e.msg if isinstance(e, WebDriverException) else str(e)
            if not isinstance(e, (CheckFailed, WebDriverException)):
                msg = f"{type(e).__name__}: {msg}\n{traceback.format_exc()}"
            self.failures.append((name, msg))
            print(f"FAIL {name}: {msg}", flush=True)
            try:
                self.shot("FAIL-" + name)
            except WebDriverException:
                pass
            return False
        finally:
            self.allowed_http = []
        self.passed += 1
        print(f"ok   {name}" + (f" — {detail}" if detail else ""), flush=True)
        return True


def number(text):
    m = re.search(r"\d[\d,]*", text or "")
    return int(m.group(0).replace(",", "")) if m else None


def run_training(t):
    """A training coordinator's explorer (`deai train --linger`): the job, its rounds with
    accepted and rejected contributions and why, the loss curve, at both widths."""
    reports = t.api("/train/v1/reports") or []
    ensure(reports, "the coordinator has no round reports")

    def training_page():
        t.open("/training")
        ensure(t.heading() == "Training", f"heading is {t.heading()!r}")
        t.wait(lambda: t.js("return !!document.querySelector('svg.chart path')"), 15, "the loss curve")
        rows = t.wait(lambda: t.js("return document.querySelectorAll('#view tbody tr').length"), 15, "round rows")
        ensure(rows >= len(reports), f"{rows} rows for {len(reports)} rounds")
        rejected = [why for r in reports for (_, why) in r["rejected"]]
        for why in rejected:
            ensure(why["reason"] in t.text(), f"rejection reason {why['reason']!r} not shown")
        t.shot("training-laptop")
        return f"{len(reports)} rounds, {len(rejected)} rejection(s) shown with their reasons"

    def phone():
        t.viewport(PHONE)
        try:
            t.open("/training")
            t.wait(lambda: t.js("return !!document.querySelector('svg.chart path')"), 15, "the loss curve")
            time.sleep(0.6)
            sw, iw = t.js("return [document.documentElement.scrollWidth, window.innerWidth]")
            t.shot("training-phone")
            ensure(sw <= iw + 1, f"the training page overflows at {iw}px: {sw}")
        finally:
            t.viewport(LAPTOP)
        return "no horizontal overflow at 390 px"

    def home():
        t.open("/")
        t.wait(lambda: t.heading(), 15, "a heading")
        t.shot("training-node-home")
        return f"home page: {t.heading()!r}"

    t.check("training page", training_page)
    t.check("training page on a phone", phone)
    t.check("training node home", home)


def run(t, pid):
    d = t.driver
    t.viewport(LAPTOP)
    t.config = t.api("/ui/config.json") or {}
    if t.config.get("training") and not t.config.get("chain"):
        return run_training(t)
    status = t.api("/v1/status")
    ensure(status and status["height"] > 0, "the node's /v1/status does not answer with a height > 0")
    ctx = {}

    # ---------------------------------------------------------------- playground end to end (first:
    # it also gives the chain a job, transactions and a receipt for the page checks)
    question = "Name a color."

    def playground_run():
        t.open("/playground")
        t.wait(lambda: t.model in t.js("return [...document.querySelectorAll('#pg-model option')].map(o => o.value)"), 15, "the model list")
        d.find_element(By.CSS_SELECTOR, f'#pg-model option[value="{t.model}"]').click()
        key = d.find_element(By.ID, "pg-key")
        key.clear()
        key.send_keys(t.key)
        msg = d.find_element(By.ID, "pg-msg")
        msg.clear()
        msg.send_keys(question)
        mx = d.find_element(By.ID, "pg-max")
        mx.clear()
        mx.send_keys("12")
        d.find_element(By.ID, "pg-send").click()
        start = time.time()
        states = []

        def streamed():  # sample the answer while it streams; done when the cursor class goes away
            text, live = t.js("const a = document.getElementById('pg-answer'); return [a.innerText.trim(), a.classList.contains('streaming')]")
            if text not in ("", "…") and (not states or states[-1] != text):
                states.append(text)
            return not live and states and text not in ("", "…") and text

        answer = t.wait(streamed, 120, "the answer to stream in", interval=0.05)
        rid = t.wait(lambda: re.fullmatch(r"[0-9a-f]{64}", t.text("#pg-receipt-id").strip() or "x") and t.text("#pg-receipt-id").strip(), 60, "the receipt id")
        seen = []

        def verified():
            v = t.text("#pg-verification").strip()
            if v and (not seen or seen[-1] != v):
                seen.append(v)
            ensure(v not in ("rejected", "expired", "unresolved"), f"verification ended {v}")
            return v == "accepted" and number(t.text("#pg-ledger-height"))

        height = t.wait(verified, 240, "verification 'accepted' with a ledger height", interval=1)
        ensure(t.js("return localStorage.getItem('deai.apiKey')") == t.key, "the API key was not stored")
        ctx["answer"] = t.text("#pg-answer").strip()
        ctx["job"] = t.js("const a = document.querySelector('#pg-job-link'); return a && a.textContent.trim()")
        ensure(ctx["job"] and re.fullmatch(r"[0-9a-f]{64}", ctx["job"]), "no job link")
        t.shot("playground-result")
        return f"answer {answer[:40]!r} (seen in {len(states)} streaming states), receipt {rid[:12]}, {' -> '.join(seen)} at height {height} after {time.time() - start:.0f}s"

    def download():
        link = d.find_element(By.CSS_SELECTOR, "#pg-receipt [data-receipt-download]")
        href = link.get_attribute("href")
        name = link.get_attribute("download")
        ensure(href.startswith("blob:"), f"download href is {href!r}")
        ensure(name == f"receipt-{ctx['job']}.json", f"download name is {name!r}")
        link.click()
        path = os.path.join(t.downloads, name)
        t.wait(lambda: os.path.exists(path) and not os.path.exists(path + ".crdownload") and os.path.getsize(path) > 0, 20, f"{name} to download")
        with open(path) as f:
            receipt = json.load(f)
        ensure(isinstance(receipt.get("signature"), str) and len(receipt["signature"]) >= 64, "the receipt has no signature")
        ensure(receipt.get("job_id") == ctx["job"], f"receipt job_id {receipt.get('job_id')} != {ctx['job']}")
        return f"{name}, {os.path.getsize(path)} bytes, signed by {receipt.get('worker_key', '?')[:12]}"

    def job_trail():
        t.open(f"/job/{ctx['job']}")
        ensure(t.heading() == "Job", f"heading is {t.heading()!r}")
        verdicts = t.wait(lambda: t.js("return document.querySelectorAll('[data-trail=\"verdict\"]').length"), 20, "verdict rows")
        ensure(t.js("return !!document.querySelector('[data-trail=\"settlement\"]')"), "no settlement in the trail")
        trail = t.text(".trail")
        ensure("Verdict: accept" in trail, f"no accepting verdict in the trail of an accepted job: {trail!r}")
        ensure("Settlement" in t.text() and "Worker" in t.text(), "no settlement breakdown")
        convo = t.wait(lambda: t.text("[data-conversation]"), 20, "the prompt and answer (API key stored)")
        ensure(question in convo, "the prompt is not shown")
        ensure(ctx["answer"][:20] in convo, f"the answer is not shown: {convo!r}")
        ensure(t.js("return !!document.querySelector('.head-actions [data-receipt-download]')"), "no Download receipt on the job page")
        t.shot("playground-job-laptop")
        t.viewport(PHONE)
        t.open(f"/job/{ctx['job']}")
        t.shot("playground-job-phone")
        t.viewport(LAPTOP)
        return f"{verdicts} verdicts, settled, conversation shown"

    def wrong_key():
        t.open("/playground")
        t.wait(lambda: t.js("return document.querySelectorAll('#pg-model option').length"), 15, "the model list")
        key = d.find_element(By.ID, "pg-key")
        key.clear()
        key.send_keys("sk-deai-wrong-key")
        msg = d.find_element(By.ID, "pg-msg")
        msg.clear()
        msg.send_keys("hello")
        d.find_element(By.ID, "pg-send").click()
        err = t.wait(lambda: t.text("#pg-error").strip(), 30, "an error message")
        ensure("401" in err and re.search(r"api key", err, re.I), f"error says {err!r}")
        ensure(t.js("return !document.getElementById('pg-send').disabled"), "Send stays disabled")
        t.shot("playground-wrong-key")
        key.clear()
        key.send_keys(t.key + Keys.TAB)  # stored again for the checks that follow
        t.wait(lambda: t.js("return localStorage.getItem('deai.apiKey')") == t.key, 5, "the right key to be stored")
        return err

    if t.check("playground streams, receipt verified", playground_run):
        t.check("download receipt", download)
        t.check("job verification trail and conversation", job_trail)
    t.check("playground wrong API key", wrong_key, allow_http=["/v1/chat/completions"])

    status = t.api("/v1/status")
    jobs = (t.api("/v1/jobs?limit=50") or {}).get("jobs", [])
    workers = (t.api("/v1/workers") or {}).get("workers", [])
    validators = {v["address"] for v in status["validators"]}
    worker_keys = {w["address"] for w in workers}
    job = jobs[0] if jobs else None
    # a block with a transaction: where the newest job was opened
    tx_block = t.api(f"/v1/block/{job['job']['opened_at']}") if job else None
    tx_id = tx_block["outcomes"][0]["id"] if tx_block and tx_block.get("outcomes") else None
    # an account that is neither validator nor worker when there is one (search sends those elsewhere)
    clients = [j["job"]["client"] for j in jobs]
    plain = [c for c in clients if c not in validators and c not in worker_keys]
    account = (plain or clients or [status["validators"][0]["address"]])[0]
    account_route = ("/validator/" if account in validators else "/worker/" if account in worker_keys else "/account/") + account

    # ---------------------------------------------------------------- pages
    def overview():
        t.open("/", fresh=True)
        ensure(t.heading() == "Network overview", f"heading is {t.heading()!r}")
        h0 = t.wait(lambda: number(t.text('[data-stat="height"]')), 15, "the height stat")
        ensure(h0 > 0, f"height {h0}")
        h1 = t.wait(lambda: (number(t.text('[data-stat="height"]')) or 0) > h0 and number(t.text('[data-stat="height"]')),
                    20, "the height to increase (live updates)")
        vals = t.js("""return [...document.querySelectorAll('section.card')].filter(s => /Validators/.test(s.querySelector('h2').textContent))
                       .flatMap(s => [...s.querySelectorAll('tbody tr')]).map(r => r.innerText)""")
        ensure(len(vals) == len(status["validators"]), f"{len(vals)} validator rows, the API lists {len(status['validators'])}")
        stake = f"{status['validators'][0]['stake']:,}"
        ensure(any(stake in v for v in vals), f"validator stake {stake} not shown")
        t.wait(lambda: t.js("return document.querySelectorAll('a[href^=\"#/block/\"]').length") >= 5, 15, "latest blocks")
        t.shot("overview-laptop")
        return f"height {h0} -> {h1}, {len(vals)} validators"

    def blocks():
        t.open("/blocks")
        ensure(t.heading() == "Blocks", f"heading is {t.heading()!r}")
        rows = t.wait(lambda: t.js("return [...document.querySelectorAll('#view tbody tr')].map(r => r.cells[0].innerText)"), 15, "block rows")
        heights = [number(r) for r in rows]
        ensure(len(heights) == 20 or heights[-1] <= 1, f"{len(heights)} rows")
        ensure(heights == sorted(heights, reverse=True), f"not newest first: {heights[:5]}")
        t.shot("blocks-laptop")
        t.mark_stale()
        d.find_element(By.CSS_SELECTOR, '[data-page="older"]').click()
        t.wait(lambda: "before=" in d.current_url, 10, "the Older button to page")
        t.wait_loaded()
        older = t.wait(lambda: [number(r) for r in t.js("return [...document.querySelectorAll('#view tbody tr')].map(r => r.cells[0].innerText)")], 10, "older rows")
        ensure(older[0] < heights[-1], f"older page starts at {older[0]}, previous ended at {heights[-1]}")
        return f"{heights[0]}..{heights[-1]}, older page from {older[0]}"

    def block_detail():
        h = job["job"]["opened_at"] if job else status["height"] - 1
        b = t.api(f"/v1/block/{h}")
        t.open(f"/block/{h}")
        ensure(t.heading().startswith("Block #"), f"heading is {t.heading()!r}")
        ensure(b["digest"] in t.text(), "the block digest is not shown")
        if tx_id:
            ensure(t.js("return !!document.querySelector(arguments[0])", f'a[href="#/tx/{tx_id}"]'), "the block's tx is not linked")
        t.shot("block-detail")
        return f"block {h}"

    def tx_detail():
        t.open(f"/tx/{tx_id}")
        ensure(t.heading() == "Transaction", f"heading is {t.heading()!r}")
        body = t.text()
        kind = tx_block["txs"][0]["tx"]["kind"]["type"]
        ensure(kind in body, f"type {kind} not shown")
        ensure(t.js("return !!document.querySelector(arguments[0])", f'a[href="#/block/{tx_block["header"]["height"]}"]'), "no link to its block")
        ensure(t.js("return !!document.querySelector(arguments[0])", f'a[href="#/account/{tx_block["txs"][0]["tx"]["from"]}"]'), "no link to the sender")
        t.shot("tx-detail")
        return f"tx {tx_id[:12]} ({kind})"

    def jobs_page():
        t.open("/jobs")
        ensure(t.heading() == "Jobs", f"heading is {t.heading()!r}")
        if not jobs:
            ensure("No jobs yet" in t.text(), "no empty state")
            return "empty state"
        t.wait(lambda: t.js("return document.querySelectorAll('#view tbody tr').length") > 0, 10, "job rows")
        ensure(t.js("return !!document.querySelector(arguments[0])", f'a[href="#/job/{job["id"]}"]'), "the newest job is not listed")
        t.shot("jobs-laptop")
        status_ = job["job"]["status"]
        t.mark_stale()
        sel = d.find_element(By.ID, "job-status")
        sel.click()
        d.find_element(By.CSS_SELECTOR, f'#job-status option[value="{status_}"]').click()
        t.wait(lambda: f"status={status_}" in d.current_url, 10, "the status filter to apply")
        t.wait_loaded()
        badges = t.wait(lambda: t.js("return [...document.querySelectorAll('#view tbody tr')].map(r => r.cells[1].innerText.trim())"), 10, "filtered rows")
        ensure(all(b == status_ for b in badges), f"filter {status_} shows {set(badges)}")
        return f"{len(badges)} {status_} jobs"

    def job_detail():
        t.open(f"/job/{job['id']}")
        ensure(t.heading() == "Job", f"heading is {t.heading()!r}")
        body = t.text()
        now = t.api(f"/v1/job/{job['id']}")["job"]["status"]  # it may have moved on since
        ensure(job["job"]["status"] in body or now in body, f"status {now} not shown")
        ensure(job["job"]["client"] in body, "client not shown")
        ensure("Verification trail" in body, "no verification trail")
        t.shot("job-detail-laptop")
        return job["id"][:12]

    def workers_page():
        t.open("/workers")
        ensure(t.heading() == "Workers", f"heading is {t.heading()!r}")
        if not workers:
            return "empty state"
        n = t.wait(lambda: t.js("return document.querySelectorAll('#view tbody tr').length"), 10, "worker rows")
        ensure(n == len(workers), f"{n} rows, the API lists {len(workers)}")
        ensure("Earned/1k tok" in t.text(), "earned per 1k tokens column missing")
        if t.config.get("gateway"):
            # The playground request ran first, so some worker reports compute time.
            t.wait(lambda: "Revenue/compute-h" in t.text(), 15, "the revenue per compute-hour column")
            rate = t.js("""
                const ths = [...document.querySelectorAll('#view thead th')].map((e) => e.textContent.trim());
                const i = ths.indexOf('Revenue/compute-h');
                return [...document.querySelectorAll('#view tbody tr')].map((r) => r.children[i].textContent.trim());""")
            ensure(any(any(c.isdigit() for c in v) for v in rate), f"no worker has a revenue rate: {rate}")
        t.shot("workers-laptop")
        return f"{n} workers"

    def worker_detail():
        w = workers[0]
        t.open(f"/worker/{w['address']}")
        ensure(t.heading() == "Worker", f"heading is {t.heading()!r}")
        body = t.text()
        ensure(w["worker"]["endpoint"] in body, "endpoint not shown")
        ensure(f"{w['worker']['jobs_done']:,}" in body, "jobs done not shown")
        t.shot("worker-detail")
        return w["address"][:12]

    def account_page():
        a = t.api(f"/v1/account/{account}")
        t.open(f"/account/{account}")
        ensure(t.heading() == "Account", f"heading is {t.heading()!r}")
        body = t.text()
        b = t.api(f"/v1/account/{account}")  # other clients may spend meanwhile
        ensure(any(f"{x['account']['balance']:,}" in body for x in (a, b)), f"balance {b['account']['balance']:,} not shown")
        if job:
            t.wait(lambda: t.js("return !!document.querySelector(arguments[0])", f'a[href="#/job/{job["id"]}"]'), 10, "the account's job")
        t.shot("account")
        return account[:12]

    def governance():
        t.open("/governance")
        ensure(t.heading() == "Governance", f"heading is {t.heading()!r}")
        body = t.text()
        ensure("challenge_window" in body, "params table missing")
        props = t.api("/v1/proposals")
        if props is not None:
            ensure(("No proposals yet" in body) if not props["proposals"] else
                   t.js("return document.querySelectorAll('[data-proposal]').length") == len(props["proposals"]),
                   "proposals not shown")
        t.shot("governance")
        for p in (props or {}).get("proposals", [])[:3]:
            # Each proposal's page: its status and what it changes, as the API says.
            t.open(f"/proposal/{p['id']}")
            t.wait(lambda: t.js("return !!document.querySelector('[data-proposal]')"), 15, f"proposal {p['id']}")
            text = t.text()
            ensure(p["status"] in text.lower(), f"proposal {p['id']}: status {p['status']!r} not shown")
            change = json.dumps(p["change"])
            names = re.findall(r'"param": "([a-z_]+)"', change) or [k for k in p["change"]]
            ensure(any(n in text for n in names), f"proposal {p['id']}: change {change} not shown")
            t.shot(f"proposal-{p['id']}")
        return f"{len(props['proposals'])} proposals" if props else "proposals route not available"

    def contributors():
        # Every kind that shares the revenue, as /v1/contributors lists it: the devnet's
        # model carries its author's royalty (from genesis), its demo app is registered and
        # its client authorized the gateway's own account.
        c = t.api("/v1/contributors")
        t.open("/contributors")
        ensure(t.heading() == "Contributors", f"heading is {t.heading()!r}")
        t.wait(lambda: "Earned by kind" in t.text(), 15, "the totals card")
        body = t.text()
        for title in ("Model royalties", "Datasets", "Apps", "Gateways", "Delegations"):
            ensure(title in body, f"no {title} section")
        if c is None:
            return "contributors route not available"
        for a in c["apps"]:
            ensure(a["app"]["name"] in body, f"app {a['app']['name']} not shown")
        paid = sum(r["royalty"]["paid"] for r in c["royalties"])
        if c["royalties"]:
            ensure(t.js("return document.querySelectorAll('.royalty').length") == len(c["royalties"]), "royalty cards")
            ensure("settled job(s)" in body, "no lineage line")
        t.shot("contributors")
        return f"{len(c['royalties'])} royalties ({paid} paid), {len(c['apps'])} apps, {len(c['gateways'])} gateways"

    def training():
        t.open("/training")
        ensure(t.heading() == "Training", f"heading is {t.heading()!r}")
        if not t.config.get("training"):
            ensure("No training job on this node" in t.text(), "no designed empty state")
            t.shot("training-empty")
            return "empty state (training: false)"
        t.wait(lambda: t.js("return !!document.querySelector('svg.chart')"), 15, "the loss chart")
        t.shot("training")
        return "loss chart shown"

    def playground_page():
        t.open("/playground")
        ensure(t.heading() == "Playground", f"heading is {t.heading()!r}")
        t.wait(lambda: t.model in t.js("return [...document.querySelectorAll('#pg-model option')].map(o => o.value)"), 15, f"model {t.model} in the select")
        t.shot("playground-laptop")
        return "model listed"

    t.check("overview", overview)
    t.check("blocks", blocks)
    t.check("block detail", block_detail)
    if tx_id:
        t.check("tx detail", tx_detail)
    else:
        print("skip tx detail: no transaction on chain")
    t.check("jobs", jobs_page)
    if job:
        t.check("job detail", job_detail)
    t.check("workers", workers_page)
    if workers:
        t.check("worker detail", worker_detail)
    t.check("account", account_page)
    t.check("governance", governance)
    t.check("contributors", contributors)
    t.check("training", training)
    t.check("playground page", playground_page)

    # ---------------------------------------------------------------- search and not-found
    def search(q, expect_hash=None, expect_text=None):
        t.open("/")
        box = d.find_element(By.ID, "search-q")
        box.clear()
        t.mark_stale()
        box.send_keys(q + Keys.ENTER)
        if expect_hash:
            t.wait(lambda: d.current_url.split("#", 1)[-1] == expect_hash, 15, f"search {q!r} to open #{expect_hash}")
            t.wait_loaded()
            return f"-> #{expect_hash}"
        def msg():
            el = t.js("return document.querySelector('#view [data-search=\"message\"], #view [data-state=\"no-activity\"]')")
            return el and el.text
        text = t.wait(msg, 15, f"a message for search {q!r}")
        ensure(re.search(expect_text, text, re.I), f"message {text!r} does not match {expect_text!r}")
        return f"{q[:16]!r}: {text.splitlines()[0][:70]}"

    unknown = secrets.token_hex(32)
    t.check("search block height", search, str(status["height"] // 2), f"/block/{status['height'] // 2}")
    if job:
        t.check("search job id", search, job["id"], f"/job/{job['id']}", allow_http=[job["id"]])
    t.check("search account", search, account, account_route, allow_http=[account])
    t.check("search unknown hash", search, unknown, None, r"nothing found", allow_http=[unknown])
    t.shot("search-unknown")
    t.check("search malformed", search, "zzz", None, r"not a valid search")
    t.shot("search-malformed")

    def not_found(route, pattern, name):
        t.open(route)
        el = t.wait(lambda: t.js("return document.querySelector('#view .notfound')"), 10, "a not-found message")
        ensure(re.search(pattern, el.text, re.I), f"message {el.text!r}")
        t.shot(name)
        return el.text.splitlines()[0][:80]

    zero = "0" * 64
    t.check("unknown route", not_found, "/nope", r"not found", "notfound-route")
    t.check("unknown job", not_found, f"/job/{zero}", r"job not found", "notfound-job", allow_http=[f"/v1/job/{zero}"])

    def malformed_params():
        # Nonsense query parameters fall back to the first page; nonsense ids get a message.
        seen = []
        for route in ("/blocks?before=zzz", "/blocks?before=-7", "/jobs?offset=abc&status=bogus",
                      "/jobs?offset=-20", "/account/xyz", "/block/abc", "/tx/12"):
            t.open(route)
            t.wait(lambda: not t.js("return !!document.querySelector('#view .loading')"), 15, f"{route} to load")
            text = t.text()
            ensure(len(text.strip()) > 20, f"{route}: blank page")
            rows = t.js("return document.querySelectorAll('#view tbody tr').length")
            msg = t.js("return (document.querySelector('#view .notfound, #view .error, #view [role=alert]') || {}).textContent || ''")
            ensure(rows > 0 or msg.strip(), f"{route}: neither data nor a message: {text[:200]!r}")
            ensure("Traceback" not in text and "panicked" not in text, f"{route}: a stack trace")
            seen.append(f"{route}: {'rows' if rows else msg.strip()[:40]}")
        t.shot("malformed-params")
        return "; ".join(seen)

    t.check("malformed parameters", malformed_params,
            allow_http=["/v1/account/xyz", "/v1/block/abc", "/v1/tx/12"])

    # ---------------------------------------------------------------- keyboard
    def keyboard():
        t.open("/jobs", fresh=True)
        def press(key):
            ActionChains(d).send_keys(key).perform()

        for i in range(12):
            press(Keys.TAB)
            if t.js("return document.activeElement.matches('.nav a')"):
                break
        ensure(t.js("return document.activeElement.matches('.nav a')"), "Tab never reached the nav links")
        first = t.js("return document.activeElement.textContent")
        outline = t.js("""const e = document.activeElement, s = getComputedStyle(e);
                          return [e.matches(':focus-visible'), s.outlineStyle, parseFloat(s.outlineWidth)]""")
        ensure(outline[0] and outline[1] != "none" and outline[2] > 0, f"no visible focus outline: {outline}")
        t.shot("keyboard-focus")
        press(Keys.TAB)
        target = t.js("return document.activeElement.getAttribute('href')")
        ensure(target and target.startswith("#/"), f"second Tab lands on {target!r}")
        t.mark_stale()
        press(Keys.ENTER)
        t.wait(lambda: d.current_url.endswith(target), 10, f"Enter to open {target}")
        t.wait_loaded()
        return f"Tab x{i + 1} -> {first!r}, Enter -> {target} ({t.heading()})"

    t.check("keyboard navigation", keyboard)

    # ---------------------------------------------------------------- widths
    def widths():
        pages = [("overview", "/"), ("jobs", "/jobs"), ("workers", "/workers"), ("playground", "/playground"),
                 ("not-found", f"/job/{zero}")]
        if job:
            pages.insert(2, ("job-detail", f"/job/{job['id']}"))
        out = []
        for label, size in (("phone", PHONE), ("laptop", LAPTOP)):
            t.viewport(size)
            for name, route in pages:
                t.open(route)
                time.sleep(0.6)
                sw, cw, iw = t.js("const e = document.documentElement; return [e.scrollWidth, e.clientWidth, window.innerWidth]")
                ensure(iw == size[0], f"viewport is {iw}px, wanted {size[0]}")
                t.shot(f"{name}-{label}")
                ensure(sw <= iw + 1 and sw <= cw + 1,
                       f"{name} overflows horizontally at {label} width: scrollWidth {sw} > {min(cw, iw)}")
                out.append(f"{name}@{iw}")
        t.viewport(LAPTOP)
        # dark colour scheme, for the record
        t.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        for name, route in pages[:3]:
            t.open(route)
            time.sleep(0.6)
            t.shot(f"{name}-laptop-dark")
        t.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        return ", ".join(out)

    t.check("no horizontal overflow (phone and laptop)", widths, allow_http=[f"/v1/job/{zero}"])

    # ---------------------------------------------------------------- node goes away (last)
    if pid:
        def unreachable():
            t.open("/", fresh=True)
            t.wait(lambda: number(t.text('[data-stat="height"]')), 15, "the overview")
            os.kill(pid, signal.SIGTERM)
            t.wait(lambda: t.js("const b = document.getElementById('banner'); return b && !b.hidden && b.getAttribute('role') === 'alert' && b.textContent"),
                   15, "the node-unreachable banner")
            banner = t.text("#banner")
            ensure(re.search(r"node unreachable", banner, re.I), f"banner says {banner!r}")
            ensure(number(t.text('[data-stat="height"]')), "the last data is gone")
            t.shot("node-unreachable")
            t.driver.get_log("browser")  # connection errors are expected now
            return banner

        t.check("node unreachable banner", unreachable)


def main():
    if len(sys.argv) not in (5, 6):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    base, key, model, shots = sys.argv[1:5]
    pid = int(sys.argv[5]) if len(sys.argv) == 6 else None
    os.makedirs(shots, exist_ok=True)
    t = Explorer(base, key, model, shots)
    try:
        run(t, pid)
    except CheckFailed as e:
        t.failures.append(("setup", str(e)))
        print(f"FAIL setup: {e}", flush=True)
    finally:
        t.close()
    if t.failures:
        print(f"\n{len(t.failures)} check(s) failed, {t.passed} passed:", file=sys.stderr)
        for name, msg in t.failures:
            print(f"  - {name}: {msg.splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    print(f"\nall {t.passed} checks passed; screenshots in {shots}")


if __name__ == "__main__":
    main()
