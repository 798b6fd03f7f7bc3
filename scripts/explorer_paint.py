#!/usr/bin/env python3
"""Explorer page timings in headless Chromium (used by `deai bench explorer --browser`).

Usage: explorer_paint.py BASE_URL JOB_ID ACCOUNT JOBS_OFFSET [REPS]

Loads each page with a full page load (fresh navigation, warm HTTP cache off) and reports,
as one JSON object on stdout: the overview's first contentful paint, and per page the
milliseconds from navigation start until its first data is on screen (the overview's height
figure; a table row elsewhere). The median over REPS loads (default 5) is reported.
"""
import json
import statistics
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

base, job, account = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
offset = int(sys.argv[4])
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 5

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--window-size=1366,800",
          f"--user-data-dir={tempfile.mkdtemp(prefix='deai-paint-')}"):
    opts.add_argument(a)
d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
d.execute_cdp_cmd("Network.enable", {})
d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})

READY = {
    "overview": 'return /\\d/.test((document.querySelector(\'[data-stat="height"]\') || {}).textContent || "")',
    # Detail pages: the heading and no section still loading.
    "job": "return !!document.querySelector('main h1') && !document.querySelector('main .loading')"
           " && /Summary/.test(document.querySelector('main').innerText)",
}
TABLE = "return !!document.querySelector('main table tbody tr') && !document.querySelector('main .loading')"
PAGES = [
    ("overview", "/"),
    ("blocks_newest", "/blocks"),
    ("blocks_oldest", "/blocks?before=21"),
    ("jobs_newest", "/jobs"),
    ("jobs_middle_page", f"/jobs?offset={offset}"),
    ("job", f"/job/{job}"),
    ("account", f"/account/{account}"),
]


def load(route, ready):
    d.get("about:blank")
    d.get(f"{base}/#{route}")
    deadline = time.time() + 30
    while time.time() < deadline:
        if d.execute_script(ready):
            return d.execute_script("return performance.now()")
        time.sleep(0.005)
    state = d.execute_script(
        "const m = document.querySelector('main'); return m ? m.innerText.slice(0, 300) : 'no main'")
    print(f"timed out waiting for {route}: {state!r}", file=sys.stderr, flush=True)
    return None


out = {"pages": {}}
fcps = []
for name, route in PAGES:
    times = []
    for _ in range(reps):
        t = load(route, READY.get(name, TABLE))
        if t is not None:
            times.append(t)
        if name == "overview":
            fcp = d.execute_script(
                "const e = performance.getEntriesByName('first-contentful-paint')[0];"
                "return e ? e.startTime : null")
            if fcp is not None:
                fcps.append(fcp)
    out["pages"][name] = statistics.median(times) if times else None
    print(f"{name}: {out['pages'][name]} ms", file=sys.stderr, flush=True)
out["fcp_ms"] = statistics.median(fcps) if fcps else None
d.quit()
print(json.dumps(out))
