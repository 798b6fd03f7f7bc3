// deai explorer: a dependency-free single-page app over the node's JSON API (same origin).
// Every API string reaches the page through textContent or attributes, never innerHTML.
'use strict';

(() => {
  // ---------------------------------------------------------------- DOM helpers
  const $ = (sel, root = document) => root.querySelector(sel);
  const view = $('#view');
  const SVGNS = 'http://www.w3.org/2000/svg';

  function put(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k == null || k === false) continue;
      el.append(k instanceof Node ? k : String(k));
    }
    return el;
  }
  // h('a', {href, class, onclick}, ...children): attributes are set with setAttribute
  // (never "style"), children appended as nodes or text.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return put(el, kids);
  }
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
    return put(el, kids);
  }
  // replaceChildren / replaceWith that skip null and false (the DOM would print "null")
  const clean = (kids) => kids.flat(Infinity).filter((k) => k != null && k !== false);
  // Live regions are re-rendered in place; a focused link or button inside keeps focus.
  function fill(el, ...kids) {
    const act = document.activeElement;
    const key = act && act !== el && el.contains(act) ? focusKey(act) : null;
    el.replaceChildren(...clean(kids));
    if (key) { const again = el.querySelector(key); if (again) again.focus({ preventScroll: true }); }
    return el;
  }
  const focusKey = (e) => (e.getAttribute('href') ? `[href="${CSS.escape(e.getAttribute('href'))}"]`
    : e.dataset.page ? `[data-page="${e.dataset.page}"]` : e.id ? '#' + CSS.escape(e.id) : null);
  const swap = (el, ...kids) => el.replaceWith(...clean(kids));
  const setWidth = (el, pctValue) => { el.style.width = Math.max(0, Math.min(100, pctValue)).toFixed(2) + '%'; return el; };

  // ---------------------------------------------------------------- formatting
  const nf = new Intl.NumberFormat('en-US');
  const fmt = (n) => (n == null ? '—' : typeof n === 'number' ? nf.format(n) : String(n));
  const fmt2 = (n, d = 2) => (n == null || !isFinite(n) ? '—' : Number(n).toFixed(d));
  const pct = (a, b) => (b > 0 ? (100 * a) / b : 0);
  const isHex64 = (s) => typeof s === 'string' && /^[0-9a-f]{64}$/i.test(s);
  const short = (s, a = 8, b = 6) => {
    s = String(s == null ? '—' : s);
    return s.length > a + b + 1 ? s.slice(0, a) + '…' + s.slice(-b) : s;
  };
  function ago(ms) {
    if (!ms) return '—';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 1) return 'just now';
    if (s < 60) return Math.round(s) + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }
  const dur = (ms) => (ms == null ? '—' : ms < 1000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s');
  const bytes = (n) => {
    if (n == null) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  };
  const smallPct = (p) => (p > 0 && p < 0.01 ? '< 0.01 %' : fmt2(p, p < 1 ? 2 : 1) + ' %');
  const bps = (v) => fmt2(v / 100, 2).replace(/\.?0+$/, '') + ' %';
  const when = (ms) => (ms ? new Date(ms).toLocaleString() + ' (' + ago(ms) + ')' : '—');

  // ---------------------------------------------------------------- links and small widgets
  const link = (href, text, cls) => h('a', { href, class: cls }, text);
  const mono = (text, title) => h('span', { class: 'mono', title }, text);
  const blockLink = (height) => (height == null ? '—' : link('#/block/' + height, '#' + fmt(height)));
  const hexLink = (kind, hex, full) => (isHex64(hex)
    ? h('a', { href: `#/${kind}/${hex.toLowerCase()}`, class: 'mono', title: hex }, full ? hex : short(hex))
    : mono(hex == null ? '—' : String(hex)));
  const acctLink = (a, full) => hexLink('account', a, full);

  const STATUS_CLASS = {
    accepted: 'ok', finalized: 'ok', executed: 'ok', passed: 'ok', active: 'ok', yes: 'ok',
    rejected: 'bad', failed: 'bad', expired: 'bad', slashed: 'bad', no: 'bad', inactive: 'bad',
    challenged: 'warn', unresolved: 'warn', pending: 'info', open: 'info', receipted: 'accent', sampled: 'accent', voting: 'info',
  };
  const badge = (status, extra) => h('span', { class: `badge ${STATUS_CLASS[status] || ''} ${extra || ''}` }, String(status));

  let models = new Map(); // model id hash -> served name (from the gateway's /v1/models)
  const modelLabel = (id) => {
    const name = models.get(id);
    return name ? h('span', { title: id }, name) : mono(short(id), id);
  };

  function kv(pairs) {
    const dl = h('dl', { class: 'kv' });
    for (const [k, v] of pairs) if (v !== undefined) dl.append(h('dt', null, k), h('dd', null, v == null ? '—' : v));
    return dl;
  }
  // cols: [{label, num?, cell: row => node|string, cls?}]
  function table(cols, rows, opts = {}) {
    const head = h('tr', null, cols.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
    // the first column names the row (th scope=row)
    const body = h('tbody', null, rows.map((r) => h('tr', null, cols.map((c, i) => {
      const v = c.cell(r);
      return h(i ? 'td' : 'th', { scope: i ? null : 'row', class: [c.num ? 'num' : '', c.cls || ''].join(' ').trim() || null }, v == null ? '—' : v);
    }))));
    const t = h('table', null, opts.caption ? h('caption', null, opts.caption) : null, h('thead', null, head), body);
    return h('div', { class: 'table-wrap ' + (opts.cls || ''), tabindex: '0', role: 'region', 'aria-label': opts.label || opts.caption || 'table' }, t);
  }
  const card = (title, ...kids) => h('section', { class: 'card' }, title ? h('h2', null, title) : null, ...kids);
  const empty = (...kids) => h('div', { class: 'empty' }, ...kids);
  const note = (...kids) => h('p', { class: 'notice' }, ...kids);
  function stat(label, key, hint) {
    return h('div', { class: 'stat', 'data-stat-card': key }, h('div', { class: 'label' }, label),
      h('div', { class: 'value', 'data-stat': key }, '—'), h('div', { class: 'hint', 'data-hint': key }, hint || ''));
  }
  function setStat(root, key, value, hint) {
    const el = root.querySelector(`[data-stat="${key}"]`);
    if (!el) return;
    const text = String(value);
    if (el.textContent !== text) {
      el.textContent = text;
      const cardEl = el.parentElement;
      cardEl.classList.remove('flash');
      void cardEl.offsetWidth; // restart the animation
      cardEl.classList.add('flash');
    }
    if (hint !== undefined) root.querySelector(`[data-hint="${key}"]`).textContent = hint;
  }
  function bar(parts, total, cls) {
    const b = h('div', { class: 'bar ' + (cls || ''), role: 'img' });
    for (const [value, c] of parts) b.append(setWidth(h('span', { class: c || '' }), pct(value, total)));
    return b;
  }
  function downloadJson(obj, filename, label, keep) {
    const blob = new Blob([JSON.stringify(obj, null, 2) + '\n'], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    if (current && !keep) current.urls.push(url); // revoked when the page is left
    return h('a', { class: 'btn primary', href: url, download: filename, 'data-receipt-download': filename }, label || 'Download receipt');
  }

  // ---------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(message, status, network, body) {
      super(message);
      this.status = status;
      this.network = network;
      this.body = body;
    }
  }
  const errText = (d) => (!d ? '' : typeof d.error === 'string' ? d.error : d.error && d.error.message ? d.error.message : '');
  const missingRoute = (e) => e instanceof ApiError && e.status === 404 && /no such route/i.test(e.message);
  const getKey = () => { try { return localStorage.getItem('deai.apiKey') || ''; } catch (_) { return ''; } };
  const setKey = (k) => { try { k ? localStorage.setItem('deai.apiKey', k) : localStorage.removeItem('deai.apiKey'); } catch (_) { /* private mode */ } };

  async function api(path, opts = {}) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), opts.timeout || 8000);
    const headers = { accept: 'application/json' };
    const key = opts.auth ? getKey() : '';
    if (key) headers.authorization = 'Bearer ' + key;
    let res, text;
    try {
      res = await fetch(path, { headers, signal: ctrl.signal, cache: 'no-store' });
      text = await res.text();
    } catch (e) {
      net.fail();
      throw new ApiError(ctrl.signal.aborted ? 'the node did not answer in time' : 'could not reach the node', 0, true);
    } finally {
      clearTimeout(timer);
    }
    const gatewayDown = res.status === 502 || res.status === 504;
    gatewayDown ? net.fail() : net.ok();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) throw new ApiError(errText(data) || `HTTP ${res.status}`, res.status, gatewayDown, data);
    return data;
  }
  const maybe = (p) => p.catch((e) => ({ __error: e })); // keep going when an optional call fails
  const failed = (r) => r && r.__error;

  // ---------------------------------------------------------------- connection state
  const net = {
    down: false, fails: 0, lastOk: 0,
    ok() { this.fails = 0; this.lastOk = Date.now(); if (this.down) { this.down = false; renderConn(); onReconnect(); } },
    fail() { this.fails++; if (!this.down && this.fails >= 2) { this.down = true; renderConn(); } },
  };
  function renderConn() {
    const conn = $('#conn'), banner = $('#banner');
    conn.classList.toggle('down', net.down);
    conn.classList.toggle('ok', !net.down && net.lastOk > 0);
    const setText = (el, t) => { if (el.textContent !== t) el.textContent = t; }; // the status region speaks on change only
    if (net.down) {
      setText($('.conn-text', conn), 'offline');
      banner.textContent = 'Node unreachable — retrying… The data below is the last the node sent'
        + (net.lastOk ? ` (${ago(net.lastOk)}).` : '.');
      banner.hidden = false;
    } else {
      setText($('.conn-text', conn), net.lastOk ? 'live' : 'connecting…');
      $('.conn-height', conn).textContent = state.status ? '#' + fmt(state.status.height) : '';
      banner.hidden = true;
      banner.textContent = '';
    }
  }
  function onReconnect() {
    if (current && current.failed) route(false);
  }

  // ---------------------------------------------------------------- global state and heartbeat
  const state = { status: null, samples: [], cfg: { chain: true, gateway: false, training: false } };
  let beating = false;
  async function heartbeat() {
    if (beating || (document.hidden && state.status)) return; // no polling from background tabs
    beating = true;
    try {
      if (state.cfg.chain) {
        const st = await api('/v1/status', { timeout: 5000 });
        state.status = st;
        state.samples.push({ t: Date.now(), height: st.height, txs: st.txs_total });
        if (state.samples.length > 90) state.samples.shift();
        if (current && current.onStatus) current.onStatus(st);
      } else if (state.cfg.training) {
        await api('/train/v1/round', { timeout: 5000 });
      } else {
        await api('/v1/models', { timeout: 5000 });
      }
    } catch (_) {
      /* net already knows */
    } finally {
      beating = false;
      renderConn();
    }
  }
  // blocks per second measured by this browser over the last ~30 s of polls
  function measuredRate(field) {
    const s = state.samples.filter((x) => x[field] != null && Date.now() - x.t < 30000);
    if (s.length < 2) return null;
    const a = s[0], b = s[s.length - 1];
    return b.t > a.t ? ((b[field] - a[field]) * 1000) / (b.t - a.t) : null;
  }

  // ---------------------------------------------------------------- routing
  let current = null;
  function makeCtx() {
    const ctx = {
      timers: [], urls: [], stopped: false, failed: false, onStatus: null,
      alive: () => !ctx.stopped && current === ctx,
      // run fn every ms (after the previous run finishes), skipping while the node is unreachable
      every(ms, fn) {
        const tick = async () => {
          if (!ctx.alive()) return;
          if (!net.down && !document.hidden) { try { await fn(); } catch (_) { /* shown by the page or the banner */ } }
          if (ctx.alive()) ctx.timers.push(setTimeout(tick, ms));
        };
        ctx.timers.push(setTimeout(tick, ms));
      },
      stop() {
        ctx.stopped = true;
        ctx.timers.forEach(clearTimeout);
        ctx.urls.forEach((u) => URL.revokeObjectURL(u));
      },
    };
    return ctx;
  }
  // [path pattern, page, nav item, needs the chain routes on this origin]
  const routes = [
    [/^$/, pageOverview, 'overview', true],
    [/^blocks$/, pageBlocks, 'blocks', true],
    [/^block\/(\d+)$/, pageBlock, 'blocks', true],
    [/^tx\/([0-9a-f]{64})$/i, pageTx, 'blocks', true],
    [/^(?:account|validator)\/([0-9a-f]{64})$/i, pageAccount, null, true],
    [/^jobs$/, pageJobs, 'jobs', true],
    [/^job\/([0-9a-f]{64})$/i, pageJob, 'jobs', true],
    [/^workers$/, pageWorkers, 'workers', true],
    [/^worker\/([0-9a-f]{64})$/i, pageWorker, 'workers', true],
    [/^governance$/, pageGovernance, 'governance', true],
    [/^contributors$/, pageContributors, 'contributors', true],
    [/^proposal\/(\d+)$/, pageProposal, 'governance', true],
    [/^training$/, pageTraining, 'training', false],
    [/^playground$/, pagePlayground, 'playground', false],
    [/^search\/(.*)$/, pageSearch, null, true],
  ];
  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, qs] = raw.split('?');
    return { path: path.replace(/\/+$/, ''), query: new URLSearchParams(qs || '') };
  }
  function route(focus) {
    if (current) current.stop();
    const ctx = makeCtx();
    current = ctx;
    const { path, query } = parseHash();
    if (!path && !state.cfg.chain && (state.cfg.training || state.cfg.gateway)) {
      location.replace(state.cfg.training ? '#/training' : '#/playground'); // this node's home page
      return;
    }
    let handler = pageNotFound, args = [], nav = null;
    for (const [re, fn, key, chain] of routes) {
      const m = path.match(re);
      if (!m) continue;
      handler = chain && !state.cfg.chain ? pageNoChain : fn;
      args = fn === pageSearch ? m.slice(1) : m.slice(1).map((s) => s.toLowerCase());
      nav = key;
      break;
    }
    if (handler !== pageSearch) $('#search-q').value = '';
    document.querySelectorAll('.nav a').forEach((a) => {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    fill(view);
    window.scrollTo(0, 0);
    let run; // called synchronously so that the heading exists before focus moves to it
    try { run = handler(ctx, args, query); } catch (e) { run = Promise.reject(e); }
    Promise.resolve(run)
      .catch((e) => {
        if (!ctx.alive()) return;
        view.querySelectorAll('.loading').forEach((el) => el.remove());
        showError(ctx, e);
      });
    const h1 = $('h1', view);
    if (focus && h1) h1.focus({ preventScroll: true });
  }
  // The page heading: h1 (focus target after navigation) and an optional subtitle.
  function head(ctx, title, sub, ...actions) {
    document.title = `${title} · deai explorer`;
    const hd = h('div', { class: 'page-head' },
      h('div', { class: 'titles' }, h('h1', { tabindex: '-1' }, title), sub ? h('p', { class: 'sub' }, sub) : null),
      actions.length ? h('div', { class: 'head-actions' }, actions) : null);
    view.append(hd);
    return hd;
  }
  function loading(text) {
    return h('p', { class: 'muted loading', 'aria-busy': 'true' }, text || 'Loading…');
  }
  // Replace a placeholder with an error state. 404 gets a not-found message.
  function showError(ctx, e, where, what) {
    const box = e && e.status === 404
      ? h('div', { class: 'error-state notfound', role: 'alert' }, h('strong', null, (what || 'Not found') + ' — '), e.message)
      : e && e.network
        ? h('div', { class: 'error-state', role: 'alert' }, 'Could not load this page: ', e.message, '. Retrying when the node is back…')
        : h('div', { class: 'error-state', role: 'alert' }, 'Something went wrong: ', (e && e.message) || String(e));
    if (e && e.network) ctx.failed = true;
    if (where) swap(where, box);
    else view.append(box);
    return box;
  }

  // ---------------------------------------------------------------- blocks helpers
  async function ensureStatus() {
    if (!state.status && state.cfg.chain) state.status = await api('/v1/status');
    return state.status;
  }
  async function tipHeight() {
    const last = state.samples[state.samples.length - 1];
    if (state.status && last && Date.now() - last.t < 4000) return state.status.height;
    const st = await api('/v1/status');
    state.status = st;
    return st.height;
  }
  // Newest-first blocks below `before`; also works against nodes that only know ?from=.
  async function fetchBlocks(before, limit) {
    const d = await api(`/v1/blocks?before=${before}&limit=${limit}`);
    let blocks = d.blocks || [];
    if (!blocks.every((b) => b.height < before)) {
      const from = Math.max(0, before - limit);
      blocks = before - from > 0 ? (await api(`/v1/blocks?from=${from}&limit=${before - from}`)).blocks || [] : [];
    }
    blocks = blocks.filter((b) => b.height < before).sort((a, b) => b.height - a.height).slice(0, limit);
    return { tip: d.tip, blocks };
  }
  function blocksTable(blocks, label) {
    return table([
      { label: 'Height', cell: (b) => blockLink(b.height) },
      { label: 'Digest', cell: (b) => h('a', { href: '#/block/' + b.height, class: 'mono', title: b.digest }, short(b.digest, 10, 4)) },
      { label: 'Txs', num: true, cell: (b) => fmt(b.txs) },
      { label: 'Events', cls: 'wrap', cell: (b) => (b.events && b.events.length ? b.events.join('; ') : h('span', { class: 'muted' }, '—')) },
      { label: 'Age', cell: (b) => h('span', { title: b.observed_ms ? new Date(b.observed_ms).toISOString() : 'time not recorded' }, ago(b.observed_ms)) },
    ], blocks, { label: label || 'Blocks' });
  }

  // ---------------------------------------------------------------- jobs helpers
  const JOB_STATUSES = ['open', 'receipted', 'sampled', 'challenged', 'accepted', 'rejected', 'expired', 'unresolved'];
  function jobsTable(jobs, label, compact) {
    const cols = [
      { label: 'Job', cell: (j) => hexLink('job', j.id) },
      { label: 'Status', cell: (j) => badge(j.job.status) },
      { label: 'Client', cell: (j) => acctLink(j.job.client) },
      { label: 'Worker', cell: (j) => (j.job.worker ? hexLink('worker', j.job.worker) : '—') },
      { label: 'Model', cell: (j) => modelLabel(j.job.model) },
      { label: 'Tokens', num: true, cell: (j) => (j.job.receipt ? fmt(j.job.receipt.tokens) : '—') },
      { label: 'Cost', num: true, cell: (j) => (j.job.receipt ? fmt(j.job.receipt.cost) : '—') },
      { label: 'Escrow', num: true, cell: (j) => fmt(j.job.escrow) },
      { label: 'Opened', cell: (j) => blockLink(j.job.opened_at) },
    ];
    const keep = ['Job', 'Status', 'Client', 'Tokens', 'Opened'];
    return table(compact ? cols.filter((c) => keep.includes(c.label)) : cols, jobs, { label: label || 'Jobs' });
  }
  const noJobs = (text) => empty(text || 'No jobs yet — ', link('#/playground', 'send one from the Playground'), '.');
  function pager(info, onNewer, onOlder, extra) {
    if (!onNewer && !onOlder) return h('div', { class: 'pager' }, h('span', { class: 'muted' }, info), extra || null);
    return h('div', { class: 'pager' },
      h('button', { type: 'button', onclick: onNewer, disabled: !onNewer, 'data-page': 'newer' }, '← Newer'),
      h('span', { class: 'muted' }, info), extra || null,
      h('button', { type: 'button', onclick: onOlder, disabled: !onOlder, 'data-page': 'older' }, 'Older →'));
  }

  // ================================================================ pages
  async function pageOverview(ctx) {
    head(ctx, 'Network overview', 'Live view of the chain, refreshed every 2 seconds');
    const live = h('div', { class: 'stats' },
      stat('Height', 'height', 'finalized blocks'), stat('Finality', 'finality', 'observed by this node'),
      stat('Blocks / s', 'bps', ''), stat('Tx / s', 'tps', ''), stat('Mempool', 'mempool', 'pending txs'),
      stat('Transactions', 'txs_total', 'all time'), stat('Jobs', 'jobs_total', 'all time'));
    live.firstChild.classList.add('primary');
    const econ = h('dl', { class: 'kv figures' });
    const sparkBox = h('div', null, loading());
    const valBox = h('div', null, loading());
    const blocksBox = h('div', null, loading());
    const jobsBox = h('div', null, loading());
    view.append(live,
      h('div', { class: 'cols' },
        card(h('span', null, 'Block time ', h('span', { class: 'card-note' }, 'last 40 blocks')), sparkBox),
        card('Economy', econ)),
      card(h('span', null, 'Validators ', h('span', { class: 'card-note' }, 'stake-weighted BFT')), valBox),
      h('div', { class: 'cols' },
        card(h('span', null, 'Latest blocks ', link('#/blocks', 'all blocks →', 'card-note')), blocksBox),
        card(h('span', null, 'Latest jobs ', link('#/jobs', 'all jobs →', 'card-note')), jobsBox)));

    let validatorInfo = new Map(), lastHeight = -1, lastJobs = 0;
    const renderStatus = (st) => {
      const ob = st.observed || {};
      setStat(live, 'height', fmt(st.height));
      setStat(live, 'finality', ob.finality_ms != null ? dur(ob.finality_ms) : '—', ob.finality_ms != null ? 'observed by this node' : 'not reported by this node');
      const mb = measuredRate('height'), mt = measuredRate('txs');
      setStat(live, 'bps', ob.blocks_per_s != null ? fmt2(ob.blocks_per_s) : fmt2(mb), ob.blocks_per_s != null ? 'observed by this node' : 'measured by your browser');
      setStat(live, 'tps', ob.txs_per_s != null ? fmt2(ob.txs_per_s) : fmt2(mt), ob.txs_per_s != null ? 'observed by this node' : 'measured by your browser');
      setStat(live, 'mempool', fmt(st.mempool));
      setStat(live, 'txs_total', fmt(st.txs_total), st.txs_total == null ? 'not reported by this node' : 'all time');
      setStat(live, 'jobs_total', fmt(st.jobs_total), st.jobs_total == null ? 'not reported by this node' : 'all time');
      fill(econ, [['Supply', st.supply, 'units in existence'], ['Total stake', st.total_stake, `${smallPct(pct(st.total_stake, st.supply))} of supply bonded`],
        ['Treasury', st.treasury, 'governance pool'], ['Burned', st.burned, 'removed from supply'], ['Validators', st.validators.length, 'in the active set']]
        .map(([k, v, hint]) => [h('dt', null, k, h('span', { class: 'hint' }, hint)), h('dd', null, fmt(v))]));
      renderValidators(st);
    };
    const renderValidators = (st) => {
      const total = st.total_stake || st.validators.reduce((s, v) => s + v.stake, 0);
      const vals = st.validators.slice().sort((a, b) => b.stake - a.stake);
      fill(valBox, vals.length ? table([
        { label: 'Validator', cell: (v) => h('span', null, hexLink('validator', v.address), v.address === st.node ? h('span', { class: 'badge accent small' }, ' this node') : null) },
        { label: 'Stake', num: true, cell: (v) => fmt(v.stake) },
        { label: 'Share', cell: (v) => h('div', { class: 'share' }, bar([[v.stake, 'c2']], total), h('span', { class: 'small' }, fmt2(pct(v.stake, total), 1) + ' %')) },
        { label: 'Verdicts', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).verdicts) },
        { label: 'Drawn', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).assigned || 0) },
        { label: 'Missed', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).missed || 0) },
        { label: 'Wrong', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).wrong || 0) },
        { label: 'Latency', num: true, cell: (v) => { const i = validatorInfo.get(v.address) || {}; return i.committee_votes ? fmt2(i.latency_blocks / i.committee_votes, 1) + ' blocks' : '—'; } },
        { label: 'Earned', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).earned) },
        { label: 'Slashed', num: true, cell: (v) => fmt((validatorInfo.get(v.address) || {}).slashed) },
        { label: 'Endpoint', cell: (v) => mono((validatorInfo.get(v.address) || {}).endpoint || '—') },
      ], vals, { label: 'Validators' }) : empty('No validators.'));
    };
    const refreshBlocks = async (tip) => {
      const { blocks } = await fetchBlocks(tip + 1, 40);
      fill(blocksBox, blocks.length ? blocksTable(blocks.slice(0, 5), 'Latest blocks') : empty('No blocks yet.'));
      fill(sparkBox, blockTimeSpark(blocks));
    };
    const refreshJobs = async () => {
      const d = await api('/v1/jobs?limit=5');
      fill(jobsBox, d.jobs.length ? jobsTable(d.jobs, 'Latest jobs', true) : noJobs());
    };
    const refreshValidators = async () => {
      const d = await api('/v1/validators');
      validatorInfo = new Map(d.validators.map((v) => [v.address, v.validator]));
      if (state.status) renderValidators(state.status);
    };
    ctx.onStatus = (st) => {
      renderStatus(st);
      if (st.height !== lastHeight) { lastHeight = st.height; refreshBlocks(st.height).catch(() => {}); }
      if (Date.now() - lastJobs > 4000) { lastJobs = Date.now(); refreshJobs().catch(() => {}); }
    };
    ctx.every(15000, refreshValidators);
    refreshValidators().catch(() => {});
    if (state.status) ctx.onStatus(state.status);
    await heartbeat();
  }

  // Sparkline of block intervals (from the node's observed_ms), or of this session's block rate.
  function blockTimeSpark(blocks) {
    const asc = blocks.filter((b) => b.observed_ms).sort((a, b) => a.height - b.height);
    let values = [], label, range = null;
    for (let i = 1; i < asc.length; i++) {
      if (asc[i].height === asc[i - 1].height + 1) values.push(asc[i].observed_ms - asc[i - 1].observed_ms);
    }
    if (values.length >= 2) {
      const avg = values.reduce((s, v) => s + v, 0) / values.length;
      label = `average ${dur(avg)} per block over the last ${values.length + 1} blocks`;
      range = `fastest ${dur(Math.min(...values))} · slowest ${dur(Math.max(...values))}`;
    } else {
      const s = state.samples;
      for (let i = 1; i < s.length; i++) values.push((s[i].height - s[i - 1].height) * 1000 / Math.max(1, s[i].t - s[i - 1].t));
      label = 'block times not recorded by this node; showing blocks per second measured by your browser';
      if (values.length < 2) return h('p', { class: 'muted small' }, 'Collecting samples…');
    }
    const txs = blocks.reduce((n, b) => n + (b.txs || 0), 0);
    const newest = blocks.length ? blocks.reduce((a, b) => (a.height > b.height ? a : b)) : null;
    const W = 600, H = 80, max = Math.max(...values) || 1, min = Math.min(0, ...values);
    const x = (i) => (i * W) / (values.length - 1), y = (v) => H - 3 - ((v - min) / (max - min || 1)) * (H - 6);
    const line = values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)}`).join(' ');
    return h('figure', { class: 'spark-fig' },
      svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label },
        svg('path', { class: 'area', d: `${line} L${W} ${H} L0 ${H} Z` }), svg('path', { class: 'line', d: line, 'vector-effect': 'non-scaling-stroke' })),
      h('figcaption', { class: 'muted small' }, label),
      h('div', { class: 'legend' }, range ? h('span', null, range) : null,
        h('span', null, `${fmt(txs)} transactions in the last ${fmt(blocks.length)} blocks`),
        newest && newest.observed_ms ? h('span', null, `newest block ${ago(newest.observed_ms)}`) : null));
  }

  async function pageBlocks(ctx, _args, query) {
    head(ctx, 'Blocks', 'Finalized blocks, newest first');
    const box = h('div', { class: 'card' }, loading());
    view.append(box);
    const tip = await tipHeight();
    const fixed = query.has('before') ? Math.max(1, Math.min(Number(query.get('before')) || tip + 1, tip + 1)) : null;
    const render = async () => {
      const latest = Math.max(tip, state.status ? state.status.height : 0);
      const { blocks } = await fetchBlocks(fixed || latest + 1, 20);
      if (!blocks.length) { fill(box, empty('No blocks in this range.')); return; }
      const hi = blocks[0].height, lo = blocks[blocks.length - 1].height;
      fill(box, blocksTable(blocks, 'Blocks'), pager(`blocks ${fmt(lo)}–${fmt(hi)} of ${fmt(latest)}`,
        hi < latest ? () => { location.hash = hi + 21 > latest ? '#/blocks' : '#/blocks?before=' + (hi + 21); } : null,
        lo > 0 ? () => { location.hash = '#/blocks?before=' + lo; } : null));
    };
    await render();
    if (!query.has('before')) ctx.every(3000, render); // the first page follows the tip
  }

  async function pageBlock(ctx, [height]) {
    const n = Number(height);
    head(ctx, `Block #${fmt(n)}`, null,
      n > 0 ? link('#/block/' + (n - 1), '← Parent', 'btn') : null, link('#/block/' + (n + 1), 'Child →', 'btn'));
    const ph = loading();
    view.append(ph);
    let b;
    try { b = await api('/v1/block/' + n); } catch (e) { showError(ctx, e, ph, 'Block not found'); return; }
    const hd = b.header || {};
    const txRows = (b.txs || []).map((t, i) => ({ st: t, out: (b.outcomes || [])[i] || {}, i }));
    swap(ph, 
      card('Header', kv([
        ['Height', fmt(hd.height)],
        ['Digest', mono(b.digest)],
        ['Parent', hd.height > 0 ? h('a', { href: '#/block/' + (hd.height - 1), class: 'mono' }, hd.parent) : mono(hd.parent)],
        ['View', fmt(hd.view)],
        ['Transactions root', mono(hd.txs_root)],
        ['State root', mono(hd.state_root)],
        ['Finalized', b.observed_ms ? when(b.observed_ms) : h('span', { class: 'muted' }, 'time not recorded by this node')],
      ])),
      card(`Transactions (${txRows.length})`, txRows.length ? table([
        { label: '#', num: true, cell: (r) => String(r.i) },
        { label: 'Transaction', cell: (r) => (r.out.id ? hexLink('tx', r.out.id) : '—') },
        { label: 'Type', cell: (r) => badge(r.st.tx.kind.type) },
        { label: 'From', cell: (r) => acctLink(r.st.tx.from) },
        { label: 'Fee', num: true, cell: (r) => fmt(r.st.tx.fee) },
        { label: 'Result', cls: 'wrap', cell: (r) => (r.out.error ? h('span', { class: 'badge bad', title: r.out.error }, 'failed: ' + r.out.error) : badge('ok', 'ok')) },
      ], txRows, { label: 'Transactions' }) : empty('No transactions in this block.')),
      card(`Events (${(b.events || []).length})`, (b.events || []).length
        ? h('ul', { class: 'events' }, b.events.map((e) => h('li', null, e))) : empty('No events in this block.')));
  }

  // Renders the fields of a transaction kind; hashes become links by field name.
  function kindPairs(kind) {
    const linkFor = { job: 'job', worker: 'worker', to: 'account', voter: 'account', challenger: 'account', address: 'account' };
    return Object.entries(kind).filter(([k]) => k !== 'type').map(([k, v]) => {
      let node;
      if (k === 'model' && isHex64(v)) node = modelLabel(v);
      else if (k === 'proposal' && typeof v === 'number') node = link('#/proposal/' + v, 'proposal ' + v);
      else if (isHex64(v) && linkFor[k]) node = hexLink(linkFor[k], v, true);
      else if (typeof v === 'number') node = fmt(v);
      else if (typeof v === 'boolean') node = badge(v ? 'yes' : 'no');
      else if (v === null) node = '—';
      else if (typeof v === 'object') node = h('pre', null, JSON.stringify(v, null, 2));
      else node = mono(String(v));
      return [k.replace(/_/g, ' '), node];
    });
  }

  async function pageTx(ctx, [id]) {
    head(ctx, 'Transaction', id);
    const ph = loading();
    view.append(ph);
    let t;
    try { t = await api('/v1/tx/' + id); } catch (e) { showError(ctx, e, ph, 'Transaction not found'); return; }
    if (t.status === 'pending') {
      swap(ph, card('Status', kv([['Status', badge('pending')], ['Id', mono(t.id)]]),
        note('In the mempool; this page refreshes until it is finalized.')));
      ctx.every(2000, async () => { const u = await api('/v1/tx/' + id); if (u.status !== 'pending') route(false); });
      return;
    }
    let signed = t.tx, index = t.index;
    if (!signed) { // older nodes: find it in its block
      const b = await api('/v1/block/' + t.height);
      index = (b.outcomes || []).findIndex((o) => o.id === id);
      signed = index >= 0 ? b.txs[index] : null;
    }
    const tx = signed ? signed.tx : null;
    swap(ph, 
      card('Summary', kv([
        ['Status', h('span', null, badge(t.error ? 'failed' : 'finalized'), t.error ? h('span', { class: 'muted' }, ' executed with an error') : null)],
        ['Id', mono(t.id)],
        ['Block', blockLink(t.height)],
        ['Index in block', index != null && index >= 0 ? fmt(index) : '—'],
        ['Type', tx ? badge(tx.kind.type) : '—'],
        ['From', tx ? acctLink(tx.from, true) : '—'],
        ['Fee', tx ? fmt(tx.fee) : '—'],
        ['Nonce', tx ? fmt(tx.nonce) : '—'],
        ['Error', t.error ? h('span', { class: 'badge bad' }, t.error) : h('span', { class: 'muted' }, 'none')],
      ])),
      tx ? card(`Details: ${tx.kind.type.replace(/_/g, ' ')}`, kv(kindPairs(tx.kind))) : null,
      signed ? card('Signature', kv([['Chain', mono(tx.chain)], ['Signature', mono(signed.sig)]])) : null);
  }

  async function pageAccount(ctx, [addr]) {
    head(ctx, 'Account', addr);
    const ph = loading();
    view.append(ph);
    const [acct, workers, validators] = await Promise.all([
      api('/v1/account/' + addr), maybe(api('/v1/workers')), maybe(api('/v1/validators'))]);
    const a = acct.account || {};
    const worker = !failed(workers) && (workers.workers || []).find((w) => w.address === addr);
    const validator = !failed(validators) && (validators.validators || []).find((v) => v.address === addr);
    const roles = h('span', null,
      worker ? link('#/worker/' + addr, 'worker →', 'badge accent') : null, ' ',
      validator ? h('span', { class: 'badge info' }, 'validator') : null,
      !worker && !validator ? h('span', { class: 'muted' }, 'none') : null);
    const unbonding = (a.unbonding || []).length
      ? h('ul', { class: 'events' }, a.unbonding.map((u) => h('li', null, typeof u === 'object'
        ? Object.entries(u).map(([k, v]) => `${k} ${fmt(v)}`).join(' · ') : fmt(u))))
      : h('span', { class: 'muted' }, 'nothing unbonding');
    const notice = h('div');
    swap(ph, notice, card('Balance', kv([
      ['Address', mono(addr)], ['Balance', fmt(a.balance)], ['Staked', fmt(a.stake)], ['Nonce', fmt(a.nonce)],
      ['Unbonding', unbonding], ['Roles', roles], ['As of block', blockLink(acct.height)],
    ])));
    if (validator) {
      const v = validator.validator || {};
      view.append(card('Validator', kv([['Stake', fmt(validator.stake)], ['Verdicts cast', fmt(v.verdicts)],
        ['Committees drawn for', fmt(v.assigned || 0)], ['Committee deadlines missed', fmt(v.missed || 0)],
        ['Verdicts against the outcome', fmt(v.wrong || 0)],
        ['Mean verification latency', v.committee_votes ? fmt2(v.latency_blocks / v.committee_votes, 1) + ' blocks (sampling to committee verdict)' : '—'],
        ['Earned', fmt(v.earned)], ['Slashed for equivocation', (v.slashed_views || []).length ? fmt(v.slashed) + ' (views ' + v.slashed_views.join(', ') + ')' : '—'],
        ['Endpoint', mono(v.endpoint || '—')], ['Registered at', blockLink(v.registered_at)]])));
    }
    const txBox = h('div', null, loading()), jobBox = h('div', null, loading());
    view.append(card('Transactions', txBox), card('Jobs', jobBox));
    let txCount = null, jobCount = null;
    const quiet = () => {
      if (txCount === 0 && jobCount === 0 && !a.balance && !a.nonce && !a.stake && !worker && !validator) {
        fill(notice, h('p', { class: 'notice warn', 'data-state': 'no-activity' },
          'Nothing found on chain for this address: no balance, no transactions, no jobs. ',
          'It is a valid address, but nothing has happened with it yet.'));
      }
    };
    const loadTxs = async (offset) => {
      try {
        const d = await api(`/v1/account/${addr}/txs?offset=${offset}&limit=20`);
        txCount = d.total;
        fill(txBox, d.txs.length ? table([
          { label: 'Transaction', cell: (t) => hexLink('tx', t.id) },
          { label: 'Block', cell: (t) => blockLink(t.height) },
          { label: 'Type', cell: (t) => badge(t.type) },
          { label: 'From', cell: (t) => (t.from === addr ? h('span', { class: 'muted' }, 'this account') : acctLink(t.from)) },
          { label: 'Result', cell: (t) => (t.error ? h('span', { class: 'badge bad', title: t.error }, 'failed') : badge('ok', 'ok')) },
        ], d.txs, { label: 'Transactions' }) : empty('No transactions.'),
        d.total > 20 ? pager(`${fmt(offset + 1)}–${fmt(offset + d.txs.length)} of ${fmt(d.total)}`,
          offset > 0 ? () => loadTxs(Math.max(0, offset - 20)) : null,
          offset + 20 < d.total ? () => loadTxs(offset + 20) : null) : null);
      } catch (e) {
        fill(txBox, missingRoute(e) ? note('Transaction history is not available on this node.') : h('p', { class: 'error-state' }, e.message));
      }
      quiet();
    };
    const loadJobs = async () => {
      try {
        const d = await api(`/v1/jobs?account=${addr}&limit=20`);
        jobCount = d.total != null ? d.total : d.jobs.length;
        fill(jobBox, d.jobs.length ? jobsTable(d.jobs, 'Jobs of this account') : empty('No jobs involve this address.'),
          d.total > 20 ? h('p', { class: 'muted small' }, `Showing the newest 20 of ${fmt(d.total)} jobs.`) : null);
      } catch (e) { fill(jobBox, h('p', { class: 'error-state' }, e.message)); }
      quiet();
    };
    await Promise.all([loadTxs(0), loadJobs()]);
  }

  async function pageJobs(ctx, _args, query) {
    const status = JOB_STATUSES.includes(query.get('status')) ? query.get('status') : '';
    const offset = Math.max(0, parseInt(query.get('offset') || '0', 10) || 0);
    const select = h('select', { id: 'job-status', name: 'status' },
      h('option', { value: '' }, 'All statuses'), JOB_STATUSES.map((s) => h('option', { value: s }, s)));
    select.value = status;
    select.addEventListener('change', () => { location.hash = '#/jobs' + (select.value ? '?status=' + select.value : ''); });
    head(ctx, 'Jobs', 'Inference jobs with escrow, receipts and verdicts, newest first',
      h('div', { class: 'filters' }, h('label', { for: 'job-status' }, 'Status'), select));
    const box = h('div', { class: 'card' }, loading());
    view.append(box);
    const qs = (o) => '#/jobs?' + new URLSearchParams(Object.assign(status ? { status } : {}, o ? { offset: o } : {})).toString();
    const render = async () => {
      const d = await api(`/v1/jobs?limit=20&offset=${offset}${status ? '&status=' + status : ''}`);
      if (!d.jobs.length) {
        fill(box, offset ? empty('No more jobs. ', link(qs(0), 'Back to the newest')) : status ? empty(`No ${status} jobs.`) : noJobs());
        return;
      }
      fill(box, jobsTable(d.jobs),
        pager(`${fmt(offset + 1)}–${fmt(offset + d.jobs.length)} of ${fmt(d.total)}`,
          offset > 0 ? () => { location.hash = qs(Math.max(0, offset - 20)); } : null,
          offset + 20 < d.total ? () => { location.hash = qs(offset + 20); } : null));
    };
    await render();
    if (!offset) ctx.every(5000, render);
  }

  const FINAL = ['accepted', 'rejected', 'expired', 'unresolved'];
  const TRAIL_TEXT = { open_job: 'Job opened, escrow locked', post_receipt: 'Receipt posted by the worker', challenge: 'Receipt challenged', verdict: 'Verdict', verdict_commit: 'Committee member sealed its verdict', verdict_reveal: 'Verdict' };

  async function pageJob(ctx, [id]) {
    const actions = h('div', { class: 'head-actions' });
    head(ctx, 'Job', id, actions);
    const ph = loading();
    view.append(ph);
    let d;
    try { d = await api('/v1/job/' + id); } catch (e) { showError(ctx, e, ph, 'Job not found'); return; }
    const boxes = { summary: h('div'), receipt: h('div'), trail: h('div'), settle: h('div'), convo: h('div') };
    swap(ph, boxes.summary, h('div', { class: 'cols' }, boxes.trail, boxes.settle), boxes.receipt, boxes.convo);
    let gw = state.cfg.gateway ? undefined : null, gwError = null; // undefined: the gateway's view is still loading
    const loadGateway = async () => {
      if (!state.cfg.gateway) return;
      try { gw = await api('/v1/receipts/' + id, { auth: true }); gwError = null; } catch (e) { gw = gw || null; gwError = e; }
    };
    const render = () => {
      const j = d.job;
      const st = state.status ? state.status.height : d.height;
      const left = j.deadline - st;
      fill(boxes.summary, card(h('span', null, 'Summary ', badge(j.status, 'big')), kv([
        ['Job id', mono(d.id)],
        ['Status', badge(j.status)],
        ['Client', acctLink(j.client, true)],
        ['Worker', j.worker ? hexLink('worker', j.worker, true) : h('span', { class: 'muted' }, 'any worker')],
        ['Model', h('span', null, modelLabel(j.model), ' ', mono(short(j.model)))],
        ['Max tokens', fmt(j.max_tokens)],
        ['Escrow', fmt(j.escrow)],
        ['Opened at', blockLink(j.opened_at)],
        ['Deadline', h('span', null, blockLink(j.deadline), ' ', h('span', { class: 'muted' },
          FINAL.includes(j.status) ? '' : left > 0 ? `(in ${fmt(left)} blocks)` : '(passed)'))],
        ['Challenge', j.challenge ? h('span', null, 'by ', acctLink(j.challenge.challenger), `, bond ${fmt(j.challenge.bond)}, at `, blockLink(j.challenge.at)) : h('span', { class: 'muted' }, 'none')],
      ])));
      renderReceipt(boxes.receipt, j, gw, gwError, actions);
      renderTrail(boxes.trail, d, gw);
      renderSettlement(boxes.settle, j);
      renderConversation(boxes.convo, gw, gwError);
    };
    render();
    await loadGateway();
    render();
    ctx.every(3000, async () => {
      if (FINAL.includes(d.job.status) && (!gw || FINAL.includes(gw.verification))) return;
      d = await api('/v1/job/' + id);
      await loadGateway();
      render();
    });
  }

  function renderReceipt(box, j, gw, gwError, actions) {
    const r = j.receipt;
    fill(actions);
    if (gw && gw.receipt) actions.append(downloadJson(gw.receipt, `receipt-${gw.job || gw.id}.json`));
    else if (r && r.pointer) actions.append(h('a', { class: 'btn', href: r.pointer, rel: 'noopener noreferrer', target: '_blank' }, 'Receipt at the worker ↗'));
    const verify = gw === undefined ? loading('Checking the gateway’s copy of the receipt…')
      : gw ? kv([
        ['Gateway verification', badge(gw.verification)],
        ['Digest on chain matches', gw.ledger ? (gw.ledger.receipt_digest_matches ? badge('yes') : badge('no')) : '—'],
        ['Signed by', gw.receipt ? hexLink('worker', gw.receipt.worker_key) : '—'],
        ['Sampling', gw.receipt && gw.receipt.sampling ? mono(Object.entries(gw.receipt.sampling).map(([k, v]) => `${k}=${v}`).join(' ')) : '—'],
        ['Verify it yourself', gw.receipt ? h('code', null, `deai verify receipt-${gw.job || gw.id}.json`) : '—'],
      ])
      : gwError && gwError.status === 404 ? note('This gateway did not serve this job; the signed receipt is kept by the worker (see the pointer above).')
        : gwError ? note('Gateway verification unavailable: ', gwError.message) : null;
    fill(box, card('Receipt', r ? kv([
      ['Digest', mono(r.digest)], ['Worker', hexLink('worker', r.worker, true)], ['Tokens', fmt(r.tokens)],
      ['Cost', fmt(r.cost)], ['Posted at', blockLink(r.posted_at)],
      ['Beacon round', r.beacon_round == null ? '—' : fmt(r.beacon_round)],
      ['Committee', (j.committee || []).length ? h('span', null, j.committee.map((a) => h('span', null, hexLink('validator', a, true), ' '))) : j.status === 'receipted' && r.beacon_round != null ? 'waiting for the beacon' : '—'],
      ['Pointer', h('a', { href: r.pointer, class: 'mono', rel: 'noopener noreferrer', target: '_blank' }, r.pointer)],
    ]) : empty('No receipt posted yet.'), verify ? h('h3', null, 'Verification') : null, verify));
  }

  function renderTrail(box, d, gw) {
    const j = d.job;
    const items = [];
    const heights = []; // the block of each trail item, to put the settlement in its place
    if (Array.isArray(d.trail)) {
      const counted = new Map((j.verdicts || []).map((v) => [v.voter, v.yes]));
      for (const t of d.trail) {
        // the vote: the trail's own `yes`, else the counted verdict of that voter; unknown for a refused one
        const yes = typeof t.yes === 'boolean' ? t.yes : !t.error && counted.has(t.from) ? counted.get(t.from) : null;
        const verdict = t.type === 'verdict' || t.type === 'verdict_reveal';
        const cls = t.error ? 'err' : verdict && yes != null ? (yes ? 'yes' : 'no') : '';
        const proven = t.type === 'verdict_reveal' ? ' (revealed with its proof of verification)' : '';
        const what = !verdict ? TRAIL_TEXT[t.type] || t.type : yes == null ? 'Verdict (not counted)' : `Verdict: ${yes ? 'accept' : 'reject'}${proven}`;
        heights.push(t.height);
        // data-trail is the item's role (a reveal is a verdict), data-tx the transaction kind
        items.push(h('li', { class: cls, 'data-trail': verdict ? 'verdict' : t.type, 'data-tx': t.type },
          h('div', { class: 'what' }, what, verdict && yes != null ? [' ', badge(yes ? 'yes' : 'no')] : null),
          h('div', { class: 'meta' }, 'by ', acctLink(t.from), ' · block ', blockLink(t.height), ' · tx ', hexLink('tx', t.id)),
          t.error ? h('div', { class: 'meta' }, h('span', { class: 'badge bad' }, 'failed: ' + t.error)) : null));
      }
    } else {
      items.push(h('li', null, h('div', { class: 'what' }, TRAIL_TEXT.open_job), h('div', { class: 'meta' }, 'block ', blockLink(j.opened_at))));
      if (j.receipt) items.push(h('li', null, h('div', { class: 'what' }, TRAIL_TEXT.post_receipt), h('div', { class: 'meta' }, 'by ', acctLink(j.receipt.worker), ' · block ', blockLink(j.receipt.posted_at))));
      for (const v of j.verdicts || []) {
        items.push(h('li', { class: v.yes ? 'yes' : 'no', 'data-trail': 'verdict' },
          h('div', { class: 'what' }, `Verdict: ${v.yes ? 'accept' : 'reject'} `, badge(v.yes ? 'yes' : 'no')), h('div', { class: 'meta' }, 'by ', acctLink(v.voter))));
      }
    }
    if (j.settlement) {
      // In block order: a verdict that arrived after settlement (and failed) comes after it.
      const later = heights.findIndex((ht) => ht > j.settlement.height);
      items.splice(later < 0 ? items.length : later, 0, h('li', { class: 'final', 'data-trail': 'settlement' },
        h('div', { class: 'what' }, 'Settled: ', badge(j.status)), h('div', { class: 'meta' }, 'block ', blockLink(j.settlement.height))));
    } else if (!FINAL.includes(j.status)) {
      items.push(h('li', { class: 'pending' }, h('div', { class: 'what muted' }, 'Waiting for ' + (j.receipt ? 'verdicts and settlement…' : 'the worker’s receipt…'))));
    }
    const yes = (j.verdicts || []).filter((v) => v.yes).length, no = (j.verdicts || []).length - yes;
    fill(box, card(h('span', null, 'Verification trail ', h('span', { class: 'card-note' }, `${yes} accept · ${no} reject`)),
      h('ol', { class: 'trail' }, items),
      Array.isArray(d.trail) ? null : h('p', { class: 'muted small' }, 'Per-transaction trail not available on this node; showing the job record.'),
      gw && gw.ledger && gw.ledger.receipt_digest_matches === false ? h('p', { class: 'error-state' }, 'The receipt digest on chain does not match the signed receipt.') : null));
  }

  function renderSettlement(box, j) {
    const s = j.settlement;
    if (!s) { fill(box, card('Settlement', empty(FINAL.includes(j.status) ? 'No settlement recorded.' : 'Not settled yet.'))); return; }
    const parts = [
      ['Worker', s.worker_paid, '', j.worker || (j.receipt && j.receipt.worker), 'worker'],
      ['Validators (fee)', s.validator_fee, 'c2'], ['Treasury', s.treasury_cut, 'c3'],
      ['Client refund', s.client_refund, 'c4', j.client, 'account'], ['Challenger', s.challenger_paid, 'ok'],
      ['Burned', s.burned, 'c5'],
    ];
    const total = parts.reduce((a, p) => a + (p[1] || 0), 0) || 1;
    fill(box, card(h('span', null, 'Settlement ', h('span', { class: 'card-note' }, 'at block ', blockLink(s.height))),
      bar(parts.filter((p) => p[1] > 0).map((p) => [p[1], p[2]]), total, 'tall'),
      h('div', { class: 'legend' }, parts.filter((p) => p[1] > 0).map((p) => h('span', null, h('i', { class: p[2] }), p[0]))),
      table([
        { label: 'Who', cell: (p) => (p[3] ? h('span', null, p[0] + ' ', hexLink(p[4], p[3])) : p[0]) },
        { label: 'Amount', num: true, cell: (p) => fmt(p[1]) },
        { label: 'Share', num: true, cell: (p) => fmt2(pct(p[1], total), 1) + ' %' },
      ], parts.concat([['Slashed from worker stake', s.slashed, 'bad']]), { label: 'Settlement', cls: 'fit' }),
      h('p', { class: 'muted small' }, `Escrow ${fmt(j.escrow)} · distributed ${fmt(total)}.`)));
  }

  function renderConversation(box, gw, gwError) {
    if (!state.cfg.gateway || (gwError && gwError.status === 404)) { fill(box); return; }
    let body;
    if (gw === undefined) {
      body = loading();
    } else if (gw && gw.conversation) {
      const c = gw.conversation;
      body = h('div', { 'data-conversation': '' }, (c.messages || c.prompt || []).map((m) => h('div', { class: 'msg ' + m.role }, h('span', { class: 'role' }, m.role), m.content)),
        h('div', { class: 'msg assistant' }, h('span', { class: 'role' }, 'answer'), c.answer));
    } else if (!getKey()) {
      body = note('The prompt and answer are private to the client that paid. Enter your API key in the ', link('#/playground', 'Playground'), ' to see them for your own jobs.');
    } else {
      body = note('The prompt and answer are shown only to the API key that paid for this job.');
    }
    fill(box, card('Prompt and answer', body));
  }

  async function pageWorkers(ctx) {
    head(ctx, 'Workers', 'Machines registered to serve models for escrowed pay');
    const box = h('div', { class: 'card' }, loading());
    view.append(box);
    const render = async () => {
      const [d, gs] = await Promise.all([api('/v1/workers'), state.cfg.gateway ? maybe(api('/v1/gateway/status')) : null]);
      const load = new Map(gs && !failed(gs) ? (gs.workers || []).map((w) => [w.address, w]) : []);
      const ws = d.workers.slice().sort((a, b) => b.worker.jobs_done - a.worker.jobs_done);
      if (!ws.length) { fill(box, empty('No workers registered yet. Start one with ', h('code', null, 'deai worker'), '.')); return; }
      const rel = (w) => (w.jobs_done + w.jobs_rejected ? fmt2(pct(w.jobs_done, w.jobs_done + w.jobs_rejected), 1) + ' %' : '—');
      const cols = [
        { label: 'Worker', cell: (r) => hexLink('worker', r.address) },
        { label: 'Active', cell: (r) => badge(r.worker.active ? 'active' : 'inactive') },
        { label: 'Models', cell: (r) => put(h('span'), r.worker.models.map((m, i) => [i ? ', ' : '', modelLabel(m)])) },
        { label: 'Price/1k', num: true, cell: (r) => fmt(r.worker.price_per_1k) },
        { label: 'Stake', num: true, cell: (r) => fmt(r.stake) },
        { label: 'Done', num: true, cell: (r) => fmt(r.worker.jobs_done) },
        { label: 'Rejected', num: true, cell: (r) => fmt(r.worker.jobs_rejected) },
        { label: 'Reliability', num: true, cell: (r) => rel(r.worker) },
        { label: 'Tokens', num: true, cell: (r) => fmt(r.worker.tokens_served) },
        { label: 'Earned', num: true, cell: (r) => fmt(r.worker.earned) },
        { label: 'Earned/1k tok', num: true, cell: (r) => (r.worker.tokens_served ? fmt2((r.worker.earned * 1000) / r.worker.tokens_served, 1) : '—') },
        { label: 'Slashed', num: true, cell: (r) => fmt(r.worker.slashed) },
      ];
      if (load.size) cols.push({ label: 'Load', num: true, cell: (r) => (load.has(r.address) ? fmt(load.get(r.address).in_flight) + ' in flight' : '—') });
      // Revenue per compute-hour: on-chain earnings over the compute time the worker reports.
      const perHour = (r) => {
        const g = load.get(r.address);
        return g && g.compute_ms > 0 ? fmt2(r.worker.earned / (g.compute_ms / 3.6e6), 1) : '—';
      };
      if ([...load.values()].some((g) => g.compute_ms > 0)) cols.push({ label: 'Revenue/compute-h', num: true, cell: perHour });
      fill(box, table(cols, ws, { label: 'Workers' }),
      h('p', { class: 'muted small' }, 'Price/1k = asking price per thousand tokens. Reliability = done / (done + rejected). Earned/1k tok = earnings per thousand tokens served. Revenue/compute-h = earnings over the compute time the worker reports (gateway nodes only). ',
        gs && failed(gs) ? 'Live load is not available on this node.' : state.cfg.gateway ? 'Load = requests this gateway has in flight.' : ''));
    };
    await render();
    ctx.every(5000, render);
  }

  async function pageWorker(ctx, [addr]) {
    head(ctx, 'Worker', addr, link('#/account/' + addr, 'Account →', 'btn'));
    const ph = loading();
    view.append(ph);
    let d;
    try { d = await api('/v1/worker/' + addr); } catch (e) { showError(ctx, e, ph, 'Worker not found'); return; }
    const w = d.worker;
    const gs = state.cfg.gateway ? await maybe(api('/v1/gateway/status')) : null;
    const g = gs && !failed(gs) ? (gs.workers || []).find((x) => x.address === addr) : null;
    const judged = w.jobs_done + w.jobs_rejected;
    swap(ph, h('div', { class: 'stats' },
      statBox('Jobs done', fmt(w.jobs_done)), statBox('Rejected', fmt(w.jobs_rejected)),
      statBox('Reliability', judged ? fmt2(pct(w.jobs_done, judged), 1) + ' %' : '—'),
      statBox('Tokens served', fmt(w.tokens_served)), statBox('Earned', fmt(w.earned)),
      statBox('Earned / 1k tok', w.tokens_served ? fmt2((w.earned * 1000) / w.tokens_served, 1) : '—'),
      statBox('Slashed', fmt(w.slashed)), statBox('In flight', g ? fmt(g.in_flight) : '—')),
    card('Registration', kv([
      ['Address', mono(addr)], ['Status', badge(w.active ? 'active' : 'inactive')], ['Stake', fmt(d.stake)],
      ['Models', put(h('span'), w.models.map((m, i) => [i ? ', ' : '', modelLabel(m), ' ', mono(short(m))]))],
      ['Price per 1k tokens', fmt(w.price_per_1k)], ['Profile', mono(w.profile)], ['Hardware', w.hardware],
      ['Endpoint', mono(w.endpoint)], ['Registered at', blockLink(w.registered_at)],
      ['Gateway view', g ? `${fmt(g.in_flight)} in flight · ${fmt(g.assigned)} assigned · ${fmt(g.failures)} failures` : undefined],
    ])));
    const jobBox = h('div', null, loading());
    view.append(card('Jobs', jobBox));
    try {
      const j = await api(`/v1/jobs?account=${addr}&limit=20`);
      fill(jobBox, j.jobs.length ? jobsTable(j.jobs, 'Jobs of this worker') : empty('No jobs for this worker yet.'));
    } catch (e) { fill(jobBox, h('p', { class: 'error-state' }, e.message)); }
  }
  const statBox = (label, value) => h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));

  // ---------------------------------------------------------------- governance
  const PARAM_HELP = {
    price_floor: 'lowest price per 1k tokens a worker may ask', sample_rate_bps: 'share of receipts validators re-check',
    slash_bps: 'share of a worker’s stake slashed on a rejected receipt', challenge_window: 'blocks a receipt can be challenged',
    verdict_window: 'blocks validators have to vote', job_timeout: 'blocks before a job without receipt expires',
    unbonding_period: 'blocks before unstaked funds return', treasury_bps: 'treasury cut of a job payment',
    validator_fee_bps: 'validators’ fee from a job payment', min_worker_stake: 'stake to register a worker',
    min_validator_stake: 'stake to register a validator', challenge_bond: 'bond a challenger posts', min_fee: 'lowest transaction fee',
    quorum_bps: 'stake that must vote on a proposal', threshold_bps: 'share of voting stake that must say yes',
    voting_period: 'blocks a proposal stays open', execution_delay: 'blocks between passing and taking effect',
    royalty_bps: 'share of a job’s cost paid to its model’s royalty beneficiaries', data_royalty_bps: 'data providers’ share of a trained model’s royalty',
    app_fee_cap_bps: 'highest fee an app may ask on top of a job’s cost', gateway_fee_bps: 'gateway’s fee on top of a job’s cost (non-custodial clients)',
    commission_bps: 'validators’ cut of their delegators’ rewards',
  };
  function paramValue(k, v) {
    if (k.endsWith('_bps')) return `${bps(v)} (${fmt(v)} bps)`;
    if (/window|period|timeout|delay/.test(k)) return `${fmt(v)} blocks`;
    return fmt(v);
  }
  function changeText(change) {
    if (!change || typeof change !== 'object') return String(change);
    if (change.set) return `set ${change.set.param} = ${paramValue(String(change.set.param), change.set.value)}`;
    const [k, v] = Object.entries(change)[0] || ['?', null];
    const inner = v && typeof v === 'object' ? Object.values(v).map((x) => (isHex64(x) ? (models.get(x) || short(x)) : String(x))).join(', ') : String(v);
    return `${k.replace(/_/g, ' ')} ${inner}`;
  }
  // params (optional): quorum_bps and threshold_bps explain what the bar needs to reach
  function proposalView(p, totalStake, params) {
    const voted = p.yes_stake + p.no_stake;
    const rule = params && params.quorum_bps != null
      ? `Passes with ${bps(params.quorum_bps)} of all stake voting and more than ${bps(params.threshold_bps)} of the voting stake saying yes.` : null;
    return h('article', { class: 'proposal', 'data-proposal': p.id },
      h('h3', null, link('#/proposal/' + p.id, `Proposal ${p.id}`), ' ', badge(p.status)),
      h('p', { class: 'change' }, changeText(p.change)),
      kv([['Proposer', acctLink(p.proposer)], ['Created', blockLink(p.created)], ['Voting ends', blockLink(p.voting_end)],
        ['Executes at', p.execute_at != null ? blockLink(p.execute_at) : h('span', { class: 'muted' }, '—')]]),
      h('div', { class: 'share' }, bar([[p.yes_stake, 'ok'], [p.no_stake, 'bad']], totalStake || voted || 1, 'tall')),
      h('div', { class: 'legend' }, h('span', null, h('i', { class: 'ok' }), `yes ${fmt(p.yes_stake)}`),
        h('span', null, h('i', { class: 'bad' }), `no ${fmt(p.no_stake)}`),
        totalStake ? h('span', null, `${fmt2(pct(voted, totalStake), 1)} % of stake voted`) : null),
      rule ? h('p', { class: 'muted small' }, rule) : null,
      (p.votes || []).length ? table([
        { label: 'Voter', cell: (v) => acctLink(v.voter) }, { label: 'Vote', cell: (v) => badge(v.yes ? 'yes' : 'no') },
      ], p.votes, { label: `Votes on proposal ${p.id}`, cls: 'narrow' }) : h('p', { class: 'muted small' }, 'No votes yet.'));
  }

  async function pageGovernance(ctx) {
    head(ctx, 'Governance', 'Parameters in force and stake-weighted proposals');
    const propBox = h('div', null, loading()), paramBox = h('div', null, loading());
    view.append(card('Proposals', propBox), card('Parameters in force', paramBox));
    const [pr, pa] = await Promise.all([maybe(api('/v1/proposals')), maybe(api('/v1/params')), maybe(ensureStatus())]);
    const totalStake = state.status ? state.status.total_stake : 0;
    const params = failed(pa) ? null : pa.params;
    if (failed(pr)) fill(propBox, missingRoute(pr.__error) ? note('Proposals are not available on this node.') : h('p', { class: 'error-state' }, pr.__error.message));
    else fill(propBox, pr.proposals.length ? h('div', null, pr.proposals.map((p) => proposalView(p, totalStake, params)))
      : empty('No proposals yet. Any staker can propose a parameter change with ', h('code', null, 'deai chain propose'), '.'));
    if (failed(pa)) { fill(paramBox, h('p', { class: 'error-state' }, pa.__error.message)); return; }
    const rows = Object.keys(params).filter((k) => k !== 'allowed_models').sort();
    fill(paramBox, table([
      { label: 'Parameter', cell: (k) => mono(k) },
      { label: 'Value', num: true, cell: (k) => paramValue(k, params[k]) },
      { label: 'Meaning', cls: 'wrap', cell: (k) => h('span', { class: 'muted' }, PARAM_HELP[k] || '') },
    ], rows, { label: 'Parameters' }),
    h('h3', null, 'Allowed models'),
    (params.allowed_models || []).length ? h('ul', { class: 'events' }, params.allowed_models.map((m) => h('li', null, modelLabel(m), ' ', mono(m))))
      : h('p', { class: 'muted' }, 'Any model (no allow-list).'));
  }

  async function pageProposal(ctx, [id]) {
    head(ctx, `Proposal ${id}`, null, link('#/governance', 'All proposals', 'btn'));
    const ph = loading();
    view.append(ph);
    let d;
    try { d = await api('/v1/proposal/' + id); } catch (e) { showError(ctx, e, ph, 'Proposal not found'); return; }
    const [pa] = await Promise.all([maybe(api('/v1/params')), maybe(ensureStatus())]);
    swap(ph, card(null, proposalView(d.proposal, state.status ? state.status.total_stake : 0, failed(pa) ? null : pa.params)));
  }

  // ---------------------------------------------------------------- contributors
  // Everyone a job's fee reaches besides workers and validators, and what each earned.
  async function pageContributors(ctx) {
    head(ctx, 'Contributors', 'Model royalties, data, apps, gateways and delegators: who shares the revenue');
    const box = h('div', null, loading());
    view.append(box);
    const render = async () => {
      let c;
      try { c = await api('/v1/contributors'); } catch (e) {
        fill(box, missingRoute(e) ? note('Contributors are not available on this node.') : h('p', { class: 'error-state' }, e.message));
        return;
      }
      const sum = (xs, f) => xs.reduce((a, x) => a + f(x), 0);
      const totals = card('Earned by kind', kv([
        ['Model royalties', fmt(sum(c.royalties, (r) => r.royalty.paid))],
        ['Data providers', fmt(sum(c.datasets, (d) => d.dataset.earned))],
        ['Apps', fmt(sum(c.apps, (a) => a.app.earned))],
        ['Gateways', fmt(sum(c.gateways, (g) => g.allowance.earned))],
        ['Delegated (value now)', fmt(c.delegated)],
        ['Treasury', fmt(c.treasury)],
      ]));
      const role = (r) => (typeof r === 'string' ? r : r.data ? 'data ' + short(r.data) : Object.keys(r)[0]);
      // A model's lineage: the training job that produced it, its trainers and datasets,
      // the jobs that paid it and the royalty they paid.
      const lineage = (m) => {
        const r = m.royalty;
        const trainers = r.shares.filter((s) => s.role === 'trainer').length;
        const data = r.shares.filter((s) => typeof s.role === 'object' && s.role.data).length;
        return h('p', { class: 'muted small lineage' },
          r.training ? ['training job ', mono(short(r.training), r.training), ' → ', `${trainers} trainer(s)`, ' + ', `${data} dataset(s)`, ' → ']
            : 'named at genesis or by governance → ',
          `${fmt(r.jobs)} settled job(s) → ${fmt(r.paid)} paid`);
      };
      const royalties = card('Model royalties', c.royalties.length
        ? h('div', null, c.royalties.map((m) => h('div', { class: 'royalty' },
          h('h3', null, modelLabel(m.model), ' ', mono(short(m.model), m.model)),
          lineage(m),
          table([
            { label: 'Beneficiary', cell: (s) => acctLink(s.to) },
            { label: 'Role', cell: (s) => role(s.role) },
            { label: 'Weight', num: true, cell: (s) => fmt(s.weight) },
            { label: 'Paid', num: true, cell: (s) => fmt(s.paid) },
          ], m.royalty.shares, { label: 'Beneficiaries' }))))
        : empty('No model carries a royalty yet. Governance names one with ', h('code', null, 'set_royalty'), ' or ', h('code', null, 'allow_trained_model'), '.'));
      const datasets = card('Datasets', c.datasets.length ? table([
        { label: 'Dataset', cell: (d) => mono(short(d.id), d.id) },
        { label: 'Owner', cell: (d) => acctLink(d.dataset.owner) },
        { label: 'License', cell: (d) => d.dataset.license },
        { label: 'Shards', num: true, cell: (d) => fmt(d.dataset.shards.length) },
        { label: 'Tokens', num: true, cell: (d) => fmt(sum(d.dataset.shards, (s) => s.tokens)) },
        { label: 'Earned', num: true, cell: (d) => fmt(d.dataset.earned) },
      ], c.datasets, { label: 'Datasets' }) : empty('No dataset registered yet (', h('code', null, 'deai tx register-dataset'), ').'));
      const apps = card('Apps', c.apps.length ? table([
        { label: 'App', cell: (a) => a.app.name },
        { label: 'Id', cell: (a) => mono(short(a.id), a.id) },
        { label: 'Owner', cell: (a) => acctLink(a.app.owner) },
        { label: 'Fee', num: true, cell: (a) => bps(a.app.fee_bps) },
        { label: 'Jobs', num: true, cell: (a) => fmt(a.app.jobs) },
        { label: 'Earned', num: true, cell: (a) => fmt(a.app.earned) },
      ], c.apps, { label: 'Apps' }) : empty('No app registered yet (', h('code', null, 'deai tx register-app'), ').'));
      const gateways = card('Gateways (clients that keep their keys)', c.gateways.length ? table([
        { label: 'Gateway', cell: (g) => acctLink(g.gateway) },
        { label: 'Client', cell: (g) => acctLink(g.client) },
        { label: 'Allowance left', num: true, cell: (g) => fmt(g.allowance.remaining) },
        { label: 'Escrowed', num: true, cell: (g) => fmt(g.allowance.spent) },
        { label: 'Earned', num: true, cell: (g) => fmt(g.allowance.earned) },
      ], c.gateways, { label: 'Gateways' }) : empty('No client has authorized a gateway yet (', h('code', null, 'deai tx authorize'), ').'));
      const delegations = card('Delegations', c.delegations.length ? table([
        { label: 'Delegator', cell: (d) => acctLink(d.delegator) },
        { label: 'Validator', cell: (d) => acctLink(d.validator) },
        { label: 'Value', num: true, cell: (d) => fmt(d.value) },
      ], c.delegations, { label: 'Delegations' }) : empty('No delegations yet (', h('code', null, 'deai tx delegate'), ').'));
      fill(box, totals, royalties, datasets, apps, gateways, delegations);
    };
    await render();
    ctx.every(5000, render);
  }

  // ---------------------------------------------------------------- training
  async function pageTraining(ctx) {
    head(ctx, 'Training', 'DiLoCo rounds with contributions verified by exact re-execution');
    if (!state.cfg.training) {
      view.append(h('section', { class: 'card hero-empty', 'data-state': 'no-training' },
        h('div', { class: 'glyph', 'aria-hidden': 'true' }, '◌'),
        h('h2', null, 'No training job on this node'),
        h('p', null, 'This node does not run a training coordinator. A coordinator hands out rounds to untrusted workers, ',
          're-executes a sample of their inner steps before merging, and publishes each round’s report here.'),
        h('p', null, 'Start one on a machine of your own, then open its explorer:'),
        h('pre', null, 'deai train --corpus shakespeare --preset small --workers 4 --rounds 8'),
        h('p', { class: 'small' }, 'See docs/train.md in the deai repository for the protocol and flags.')));
      return;
    }
    const specBox = h('div', null, loading()), roundBox = h('div', null, loading());
    const chartBox = h('div', null, loading()), tableBox = h('div', null, loading());
    view.append(h('div', { class: 'cols' }, card('Current round', roundBox), card('Job', specBox)),
      card(h('span', null, 'Loss per round ', h('span', { class: 'card-note' }, 'lower is better')), chartBox), card('Rounds', tableBox));
    const spec = await api('/train/v1/job');
    const m = spec.model || {}, t = spec.train || {};
    fill(specBox, kv([
      ['Model', `${fmt(m.n_layer)} layers · width ${fmt(m.d_model)} · ${fmt(m.n_head)} heads · vocab ${fmt(m.vocab)} · context ${fmt(m.seq_len)}`],
      ['Rounds', fmt(spec.rounds)], ['Workers per round', fmt(spec.workers)], ['Inner steps (H)', fmt(spec.inner_steps)],
      ['Outer optimizer', `Nesterov, lr ${spec.outer_lr}, momentum ${spec.outer_momentum}`],
      ['Inner optimizer', t.lr != null ? `AdamW, lr ${t.lr}, batch ${fmt(t.batch)}, warmup ${fmt(t.warmup_steps)}` : '—'],
      ['Shards', `${fmt((spec.shards || []).length)} training + 1 validation`],
      ['Verified steps', `${fmt(spec.verify_steps)} per challenged contribution`], ['Reward per round', fmt(spec.reward_per_round)],
    ]));
    const render = async () => {
      const [round, reports] = await Promise.all([api('/train/v1/round'), api('/train/v1/reports')]);
      const done = round.done, n = round.spec.round;
      fill(roundBox, h('div', { class: 'stats' },
        statBox('Round', done ? 'done' : `${fmt(n + 1)} / ${fmt(spec.rounds)}`),
        statBox('Submitted', `${fmt(round.attempted)} / ${fmt(spec.workers)}`), statBox('Pending', fmt(round.pending)),
        statBox('Deadline', done ? '—' : dur(round.deadline_ms_left))),
      bar([[done ? spec.rounds : n, 'ok']], spec.rounds || 1, 'tall'),
      kv([['Checkpoint', mono(round.spec.checkpoint)], ['Randomness', mono(round.spec.randomness)], ['Job', mono(round.spec.job)]]));
      fill(chartBox, reports.length ? lossChart(reports, chartBox.clientWidth) : empty('No round has finished yet.'));
      const totalBytes = reports.reduce((s, r) => s + (r.contribution_bytes || 0), 0);
      const totalVerify = reports.reduce((s, r) => s + (r.verify_seconds || 0), 0);
      fill(tableBox, reports.length ? table([
        { label: 'Round', num: true, cell: (r) => fmt(r.round + 1) },
        { label: 'Accepted', num: true, cell: (r) => fmt(r.accepted.length) },
        { label: 'Rejected', num: true, cell: (r) => (r.rejected.length ? h('span', { class: 'badge bad' }, fmt(r.rejected.length)) : '0') },
        { label: 'Rejections', cls: 'wrap', cell: (r) => (r.rejected.length ? put(h('div'), r.rejected.map(([w, why]) => h('div', { class: 'small' },
          mono(short(w, 6, 4)), ' ', h('strong', null, why.reason), why.first_bad_step != null ? ` at step ${why.first_bad_step}` : '', ' — ', why.detail))) : h('span', { class: 'muted' }, '—')) },
        { label: 'Eval loss', num: true, cell: (r) => fmt2(r.eval_loss, 4) },
        { label: 'Train loss', num: true, cell: (r) => fmt2(r.train_loss, 4) },
        { label: 'Sent', num: true, cell: (r) => bytes(r.contribution_bytes) },
        { label: 'Verify', num: true, cell: (r) => fmt2(r.verify_seconds, 2) + ' s' },
        { label: 'Reward each', num: true, cell: (r) => fmt(r.reward_each) },
      ], reports.slice().reverse(), { label: 'Rounds' }) : empty('No round has finished yet.'),
      reports.length ? h('p', { class: 'muted small' }, `${bytes(totalBytes)} of contributions sent · ${fmt2(totalVerify, 1)} s spent verifying.`) : null);
    };
    await render();
    ctx.every(3000, render);
  }

  function niceTicks(lo, hi, n) {
    const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0 || 1)));
    const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => s >= step0) || mag * 10;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return out;
  }
  // width: the container's pixel width, so that labels keep their size on phones
  function lossChart(reports, width) {
    const W = Math.max(300, Math.min(1200, Math.round(width) || 720)), H = Math.round(Math.max(220, Math.min(320, W * 0.42)));
    const L = 56, R = 16, T = 14, B = 44;
    const pts = reports.map((r) => ({ x: r.round + 1, e: r.eval_loss, t: r.train_loss }));
    const ys = pts.flatMap((p) => [p.e, p.t]).filter((v) => v != null && isFinite(v));
    if (!ys.length) return empty('No loss values reported yet.');
    let lo = Math.min(...ys), hi = Math.max(...ys);
    const pad = (hi - lo) * 0.08 || 0.5;
    lo -= pad; hi += pad;
    const x0 = pts[0].x, x1 = Math.max(pts[pts.length - 1].x, x0 + 1);
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), Y = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);
    const g = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Loss per round: eval loss from ${fmt2(pts[0].e, 3)} to ${fmt2(pts[pts.length - 1].e, 3)}` });
    for (const v of niceTicks(lo, hi, 5)) {
      g.append(svg('line', { class: 'gridline', x1: L, x2: W - R, y1: Y(v), y2: Y(v) }),
        svg('text', { x: L - 8, y: Y(v) + 4, 'text-anchor': 'end' }, v.toFixed(2)));
    }
    for (const v of niceTicks(x0, x1, Math.min(W < 500 ? 5 : 10, x1 - x0)).filter(Number.isInteger)) {
      g.append(svg('text', { x: X(v), y: H - B + 18, 'text-anchor': 'middle' }, String(v)));
    }
    g.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }), svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
      svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, 'round'),
      svg('text', { x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', transform: `rotate(-90 14 ${(T + H - B) / 2})` }, 'loss'));
    for (const [key, cls] of [['t', 'train'], ['e', 'eval']]) {
      const ok = pts.filter((p) => p[key] != null && isFinite(p[key]));
      g.append(svg('path', { class: 's-' + cls, d: ok.map((p, i) => `${i ? 'L' : 'M'}${X(p.x).toFixed(1)} ${Y(p[key]).toFixed(1)}`).join(' ') }));
      for (const p of ok) g.append(svg('circle', { class: 'p-' + cls, cx: X(p.x), cy: Y(p[key]), r: 3.5 }, svg('title', null, `round ${p.x}: ${cls} loss ${fmt2(p[key], 4)}`)));
    }
    return h('figure', { class: 'chart-fig' }, g, h('figcaption', { class: 'legend' },
      h('span', null, h('i'), 'eval loss (held-out shard)'), h('span', null, h('i', { class: 'c2' }), 'train loss (mean of accepted workers)')));
  }

  // ---------------------------------------------------------------- playground
  const pg = { running: null, result: null, ui: null }; // survives navigation within the session
  async function pagePlayground(ctx) {
    head(ctx, 'Playground', 'Ask the network. Every answer comes with a signed receipt that validators check on chain.');
    if (!state.cfg.gateway) {
      view.append(h('section', { class: 'card hero-empty' }, h('h2', null, 'This node is not a gateway'),
        h('p', null, 'The playground sends requests through a gateway node (', h('code', null, 'deai gateway'), '). Open the explorer served by a gateway to use it.')));
      return;
    }
    const modelSel = h('select', { id: 'pg-model', name: 'model', required: true }, h('option', { value: '' }, 'Loading models…'));
    const keyIn = h('input', { id: 'pg-key', name: 'key', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'sk-deai-…' });
    keyIn.value = getKey();
    const msgIn = h('textarea', { id: 'pg-msg', name: 'message', rows: '4', required: true, placeholder: 'Ask something…' });
    const maxIn = h('input', { id: 'pg-max', name: 'max_tokens', type: 'number', min: '1', max: '4096', value: '64', inputmode: 'numeric' });
    const tempIn = h('input', { id: 'pg-temp', name: 'temperature', type: 'number', min: '0', max: '2', step: '0.1', value: '0' });
    const seedIn = h('input', { id: 'pg-seed', name: 'seed', type: 'number', min: '0', placeholder: 'random', inputmode: 'numeric' });
    const sendBtn = h('button', { type: 'submit', class: 'primary', id: 'pg-send' }, 'Send');
    const stopBtn = h('button', { type: 'button', id: 'pg-stop', hidden: true }, 'Stop');
    const forget = h('button', { type: 'button', class: 'small' }, 'Forget key');
    const err = h('div', { id: 'pg-error', role: 'alert' });
    const field = (id, label, input, help) => h('div', { class: 'field' }, h('label', { for: id }, label), input, help ? h('p', { class: 'help', id: id + '-help' }, help) : null);
    const form = h('form', { class: 'card', id: 'pg-form', novalidate: true },
      h('h2', null, 'Request'),
      field('pg-model', 'Model', modelSel),
      field('pg-key', 'API key', h('div', { class: 'filters' }, keyIn, forget), 'Stored in this browser only (localStorage); sent as a Bearer token to this gateway.'),
      field('pg-msg', 'Message', msgIn),
      h('div', { class: 'field-row' }, field('pg-max', 'Max tokens', maxIn), field('pg-temp', 'Temperature', tempIn), field('pg-seed', 'Seed', seedIn)),
      err, h('div', { class: 'actions' }, sendBtn, stopBtn));
    keyIn.setAttribute('aria-describedby', 'pg-key-help');
    const out = h('section', { class: 'card', 'aria-labelledby': 'pg-out-h' }, h('h2', { id: 'pg-out-h' }, 'Answer'));
    view.append(h('div', { class: 'pg' }, form, out));
    keyIn.addEventListener('change', () => setKey(keyIn.value.trim()));
    forget.addEventListener('click', () => { keyIn.value = ''; setKey(''); keyIn.focus(); });
    try {
      const d = await api('/v1/models');
      fill(modelSel, ...d.data.map((m) => h('option', { value: m.id }, m.id + (m.deai ? ` · ${m.deai.workers} worker${m.deai.workers === 1 ? '' : 's'}` : ''))));
      if (!d.data.length) modelSel.append(h('option', { value: '' }, 'no models served'));
    } catch (e) {
      fill(modelSel, h('option', { value: '' }, 'models unavailable'));
      fill(err, h('p', { class: 'error-state' }, 'Could not list models: ' + e.message));
    }

    pg.ui = playgroundOutput(out);
    if (pg.result) pg.ui.show(pg.result);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      fill(err);
      const key = keyIn.value.trim(), msg = msgIn.value.trim();
      if (!key) { fill(err, h('p', { class: 'error-state' }, 'Enter your API key first.')); keyIn.focus(); return; }
      if (!msg) { fill(err, h('p', { class: 'error-state' }, 'Type a message to send.')); msgIn.focus(); return; }
      setKey(key);
      const body = { model: modelSel.value, messages: [{ role: 'user', content: msg }], stream: true,
        max_tokens: Math.max(1, parseInt(maxIn.value, 10) || 64), temperature: Math.max(0, parseFloat(tempIn.value) || 0) };
      if (seedIn.value !== '') body.seed = parseInt(seedIn.value, 10);
      const ctrl = new AbortController();
      pg.running = ctrl;
      sendBtn.disabled = true; stopBtn.hidden = false;
      stopBtn.onclick = () => ctrl.abort();
      const r = { text: '', started: performance.now(), first: null, done: false, final: null, id: null, status: null };
      pg.result = r;
      pg.ui.show(r);
      try {
        await streamChat(body, key, ctrl.signal, (delta) => {
          if (r.first == null) r.first = performance.now();
          r.text += delta;
          pg.ui.text(r);
        }, (final, headerId) => { r.final = final; r.id = (final && final.deai && final.deai.receipt_id) || headerId; });
        r.done = true; r.ended = performance.now();
        pg.ui.show(r);
        if (r.id) await followReceipt(r);
      } catch (e) {
        r.done = true;
        if (r.text || r.id) pg.ui.show(r);
        else { pg.result = null; pg.ui.reset(); }
        if (e.name === 'AbortError') fill(err, h('p', { class: 'notice' }, 'Stopped.'));
        else fill(err, h('p', { class: 'error-state' }, playgroundError(e)));
      } finally {
        pg.running = null;
        sendBtn.disabled = false; stopBtn.hidden = true;
      }
    });
  }
  function playgroundError(e) {
    if (e.network) return 'Could not reach the gateway: ' + e.message + '.';
    const m = e.message ? ` (${e.message})` : '';
    switch (e.status) {
      case 401: return 'The gateway rejected this API key (401). Check the key and try again.';
      case 402: return 'Insufficient quota (402): the account behind this key cannot escrow the request’s maximum cost. Lower max tokens or fund the account.' + m;
      case 404: return 'Model not found (404)' + m + '.';
      case 429: return 'Too many requests (429); wait a moment.' + m;
      case 502: case 503: return `No worker could serve this request right now (${e.status})${m}. Try again shortly.`;
      default: return `Request failed (${e.status || 'error'})${m}.`;
    }
  }
  // POST a streaming chat completion and parse its server-sent events.
  async function streamChat(body, key, signal, onDelta, onFinal) {
    let res;
    try {
      res = await fetch('/v1/chat/completions', {
        method: 'POST', signal, cache: 'no-store',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: 'Bearer ' + key },
        body: JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError('network error', 0, true);
    }
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch (_) { /* not json */ }
      throw new ApiError(errText(data), res.status, false, data);
    }
    const headerId = res.headers.get('x-deai-receipt');
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = '', final = null;
    const handle = (block) => {
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data || data === '[DONE]') return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(errText(chunk), 500, false, chunk);
      const c = (chunk.choices || [])[0];
      if (c && c.delta && c.delta.content) onDelta(c.delta.content);
      if (chunk.deai || (c && c.finish_reason)) final = Object.assign(final || {}, chunk, { finish_reason: c && c.finish_reason });
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) { handle(buf.slice(0, i)); buf = buf.slice(i + 2); }
    }
    if (buf.trim()) handle(buf);
    onFinal(final, headerId);
  }
  // Poll the gateway's view of the receipt once a second until the ledger settles it.
  async function followReceipt(r) {
    const start = Date.now();
    while (Date.now() - start < 15 * 60 * 1000) {
      try {
        r.status = await api('/v1/receipts/' + r.id, { auth: true });
        pg.ui.show(r);
        if (FINAL.includes(r.status.verification) && (!r.status.ledger || r.status.ledger.settlement || r.status.verification !== 'accepted')) return;
      } catch (e) {
        if (!e.network && e.status !== 404) { r.statusError = e.message; pg.ui.show(r); }
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  function playgroundOutput(out) {
    const placeholder = () => h('span', { class: 'placeholder' }, 'The answer streams here, followed by its receipt and on-chain verification.');
    const answer = h('div', { class: 'answer', id: 'pg-answer', 'aria-live': 'polite', 'aria-atomic': 'false' }, placeholder());
    const meta = h('div', { class: 'run-meta', id: 'pg-meta' });
    const rec = h('div', { id: 'pg-receipt', 'aria-live': 'polite' });
    out.append(answer, meta, rec);
    const text = (r) => {
      answer.classList.toggle('streaming', !r.done);
      answer.textContent = r.text || (r.done ? '' : '…');
    };
    const show = (r) => {
      if (!document.body.contains(out)) return;
      text(r);
      const usage = r.final && r.final.usage;
      const secs = ((r.ended || performance.now()) - r.started) / 1000;
      fill(meta, 
        r.first != null ? h('span', null, 'first token ' + dur(r.first - r.started)) : null,
        usage ? h('span', null, `${fmt(usage.completion_tokens)} tokens · ${fmt2(usage.completion_tokens / Math.max(0.001, secs), 1)} tok/s`) : null,
        usage ? h('span', null, `prompt ${fmt(usage.prompt_tokens)} tokens`) : null,
        r.final && r.final.finish_reason ? h('span', null, 'finish: ' + r.final.finish_reason) : null,
        r.final && r.final.deai && r.final.deai.worker ? h('span', null, 'worker ', hexLink('worker', r.final.deai.worker)) : null);
      if (!r.id) { fill(rec); return; }
      const s = r.status || {}, led = s.ledger || {}, v = s.verification || 'pending';
      const job = s.job || (r.final && r.final.deai && r.final.deai.job);
      const posted = led.status && led.status !== 'open';
      const verdicts = (led.verdicts || []).length;
      const steps = [
        ['Answered', true], ['Receipt signed', !!s.receipt], ['Posted on chain', posted],
        [verdicts ? `${verdicts} verdict${verdicts === 1 ? '' : 's'}` : 'Verdicts', verdicts > 0],
        [led.settlement ? `Settled at #${fmt(led.settlement.height)}` : 'Settled', !!led.settlement],
      ];
      let nowMarked = false;
      fill(rec, 
        h('h3', null, 'Receipt and verification'),
        h('ol', { class: 'steps', 'aria-label': 'Verification progress' }, steps.map(([label, done]) => {
          let cls = done ? 'done' : '';
          if (!done && !nowMarked && !FINAL.includes(v)) { cls = 'now'; nowMarked = true; }
          if (!done && ['rejected', 'expired', 'unresolved'].includes(v)) cls = 'failed';
          return h('li', { class: cls }, label);
        })),
        kv([
          ['Receipt id', h('span', { class: 'mono', id: 'pg-receipt-id' }, r.id)],
          ['Job', job ? h('a', { href: '#/job/' + job, class: 'mono', id: 'pg-job-link' }, job) : '—'],
          ['Verification', h('span', { id: 'pg-verification', class: `badge ${STATUS_CLASS[v] || ''}` }, v)],
          ['Ledger status', led.status ? badge(led.status) : h('span', { class: 'muted' }, 'not on chain yet')],
          ['Finalized at height', led.settlement ? h('span', { id: 'pg-ledger-height' }, blockLink(led.settlement.height)) : h('span', { class: 'muted' }, 'waiting for settlement…')],
          ['Digest matches chain', led.receipt_digest_matches == null ? '—' : badge(led.receipt_digest_matches ? 'yes' : 'no')],
        ]),
        r.statusError ? h('p', { class: 'error-state' }, r.statusError) : null,
        h('div', { class: 'actions' },
          s.receipt ? (r.dl || (r.dl = downloadJson(s.receipt, `receipt-${job || r.id}.json`, null, true))) : h('button', { type: 'button', disabled: true }, 'Download receipt'),
          job ? link('#/job/' + job, 'Open job page →', 'btn') : null),
        s.receipt ? h('p', { class: 'muted small' }, 'Check it offline: ', h('code', null, `deai verify receipt-${job || r.id}.json`)) : null);
    };
    const reset = () => { answer.classList.remove('streaming'); fill(answer, placeholder()); fill(meta); fill(rec); };
    return { show, text, reset };
  }

  // ---------------------------------------------------------------- search
  function classify(q) {
    const s = q.trim().toLowerCase().replace(/^0x/, '');
    if (/^\d{1,19}$/.test(s)) return { kind: 'height', q: s };
    if (/^[0-9a-f]{64}$/.test(s)) return { kind: 'hash', q: s };
    if (/^(p|proposal\s*)\d{1,19}$/.test(s)) return { kind: 'proposal', q: s };
    return null;
  }
  const SEARCH_ROUTE = { block: 'block', tx: 'tx', job: 'job', account: 'account', worker: 'worker', validator: 'validator', proposal: 'proposal' };
  async function pageSearch(ctx, [raw]) {
    let q;
    try { q = decodeURIComponent(raw || '').trim(); } catch (_) { q = raw || ''; }
    head(ctx, 'Search', `“${q}”`);
    const ph = loading('Searching…');
    view.append(ph);
    const says = (...kids) => swap(ph, h('div', { class: 'error-state notfound', role: 'alert', 'data-search': 'message' }, ...kids));
    const c = classify(q);
    if (!c) {
      says(h('strong', null, 'Not a valid search. '), `“${q}” is not a block height, a 64-character hex hash or address, or a proposal number.`,
        h('br'), 'Try a height like ', h('code', null, '42'), ', a transaction, job or block hash, an account address, or ', h('code', null, 'p1'), '.');
      return;
    }
    const go = (kind, id) => { if (ctx.alive()) location.replace(`#/${SEARCH_ROUTE[kind] || 'account'}/${id}`); };
    try {
      const r = await api('/v1/search?q=' + encodeURIComponent(c.q));
      if (r.kind === 'block' && !/^\d+$/.test(String(r.id))) { says('Found block ', mono(r.id), ' but could not resolve its height.'); return; }
      go(r.kind, r.id);
    } catch (e) {
      if (missingRoute(e)) return searchLocally(ctx, c, go, says);
      if (e.status === 404) says(h('strong', null, 'Nothing found. '), `No block, transaction, job, worker, validator, account or proposal matches “${q}”.`);
      else if (e.status === 400) says(h('strong', null, 'Not a valid search. '), e.message);
      else throw e;
    }
  }
  // For nodes without /v1/search: resolve on the client with the routes every node has.
  async function searchLocally(ctx, c, go, says) {
    if (c.kind === 'height') return go('block', String(Number(c.q)));
    if (c.kind === 'proposal') return go('proposal', c.q.replace(/\D/g, ''));
    const id = c.q;
    for (const [kind, path] of [['job', '/v1/job/'], ['tx', '/v1/tx/']]) {
      try { await api(path + id); return go(kind, id); } catch (e) { if (e.status !== 404) throw e; }
    }
    const [ws, vs, acct] = await Promise.all([maybe(api('/v1/workers')), maybe(api('/v1/validators')), api('/v1/account/' + id)]);
    if (!failed(ws) && ws.workers.some((w) => w.address === id)) return go('worker', id);
    if (!failed(vs) && vs.validators.some((v) => v.address === id)) return go('validator', id);
    const a = acct.account || {};
    if (a.balance || a.nonce || a.stake) return go('account', id);
    says(h('strong', null, 'Nothing found. '), `No transaction, job, worker, validator or account with activity matches “${c.q}”.`);
  }

  function pageNoChain() {
    head(null, 'Not available on this node');
    view.append(h('section', { class: 'card hero-empty' }, h('h2', null, 'This node does not serve chain data'),
      h('p', null, `This ${state.cfg.service || ''} node has no ledger, so blocks, jobs, workers and governance are not shown here.`),
      h('p', null, state.cfg.training ? link('#/training', 'Training →', 'btn') : null, ' ',
        state.cfg.gateway ? link('#/playground', 'Playground →', 'btn') : null)));
  }
  function pageNotFound() {
    head(null, 'Page not found');
    view.append(h('div', { class: 'error-state notfound', role: 'alert' }, h('strong', null, 'Not found — '),
      `there is no page at “${location.hash || '#/'}”. `, link('#/', 'Go to the overview'), '.'));
  }

  // ---------------------------------------------------------------- boot
  function wireSkipLink() {
    $('.skip').addEventListener('click', (ev) => { ev.preventDefault(); $('#main').focus(); });
  }
  function wireSearch() {
    const form = $('#search'), input = $('#search-q');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const q = input.value.trim();
      if (!q) { input.focus(); return; }
      const target = '#/search/' + encodeURIComponent(q);
      if (location.hash === target) route(true); else location.hash = target;
      input.blur();
    });
  }
  async function boot() {
    wireSearch();
    wireSkipLink();
    try {
      const r = await fetch('/ui/config.json', { cache: 'no-store' });
      if (r.ok) Object.assign(state.cfg, await r.json());
    } catch (_) { /* defaults */ }
    $('#foot-info').textContent = [state.cfg.service && `service: ${state.cfg.service}`, state.cfg.version && `v${state.cfg.version}`].filter(Boolean).join(' · ');
    if (state.cfg.gateway) {
      try {
        const d = await api('/v1/models', { timeout: 4000 });
        models = new Map(d.data.filter((m) => m.deai).map((m) => [m.deai.model_id, m.id]));
      } catch (_) { /* names fall back to hashes */ }
    }
    window.addEventListener('hashchange', () => route(true));
    route(false);
    heartbeat();
    setInterval(heartbeat, 2000);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) heartbeat(); });
    setInterval(() => { if (net.down) renderConn(); }, 1000);
  }
  boot();
})();
