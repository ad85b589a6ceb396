# ruff: noqa: E501 - HTML and JavaScript
"""The dashboard page (HTML + script, no external assets). Data texts are inserted with ``textContent``
only, never as HTML. The server's POST token reaches the script only inside the page (``page_html``), and
the script sends it back in the ``X-Activesynth-Token`` header with a JSON body."""

import html

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Active Synthesis</title>
<meta name="activesynth-token" content="%TOKEN%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}
#chat{width:36%;display:flex;flex-direction:column;border-right:1px solid #ccc;padding:8px;box-sizing:border-box}
#log{flex:1;overflow:auto;background:#fafafa;border:1px solid #ddd;padding:6px}
.msg{white-space:pre-wrap;margin:4px 0;padding:4px;border-radius:4px;font-family:monospace;font-size:12px}
.you{background:#e3f0ff}.bot{background:#f0f0f0}
#form{display:flex;gap:4px;margin-top:6px}#msg{flex:1;font:13px monospace;height:3.2em}
#dash{flex:1;overflow:auto;padding:8px 14px}
h2{font-size:15px;margin:14px 0 4px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
pre{background:#f6f6f6;padding:6px;font-size:12px;white-space:pre-wrap;max-height:16em;overflow:auto}
.bar{background:#e8853d;height:10px;display:inline-block}.row{display:flex;gap:16px;flex-wrap:wrap}
img{max-width:480px;border:1px solid #ddd}
</style></head>
<body>
<section id="chat"><b>Chat</b> <small>(slash commands always work: /help)</small>
<div id="log"></div>
<div id="form"><textarea id="msg" placeholder="/status"></textarea><button id="send">Send</button></div>
</section>
<section id="dash">
<div>Run: <select id="run"></select> <span id="state"></span></div>
<h2>Live progress</h2><pre id="status">no run selected</pre>
<div class="row">
<div><h2>Test accuracy per round and arm</h2><svg id="curves" width="440" height="230"></svg></div>
<div><h2>Cluster map</h2><img id="clustermap" alt="cluster map (after the first report)"></div>
</div>
<h2>Rounds</h2><table id="rounds"></table>
<h2>Per-class uncertainty</h2><table id="perclass"></table>
<h2>Samples <select id="kind"><option>rejected</option><option>accepted</option><option>all</option></select>
<input id="label" placeholder="label filter" size="14"> <button id="load">Load</button></h2>
<table id="samples"></table>
<h2>Prompt versions</h2><div id="prompts"></div><pre id="promptsrc" hidden></pre>
</section>
<script src="/app.js"></script>
</body></html>
"""

APP_JS = r"""
const URL_TOKEN = new URLSearchParams(location.search).get('token') || '';  // a user --token, if any
const TOKEN = document.querySelector('meta[name="activesynth-token"]').content || URL_TOKEN;
let current = new URLSearchParams(location.search).get('run'), plotSrc = '';  // ?run=ID preselects a run
if (current) document.getElementById('run').dataset.follow = 'no';
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
async function api(path, opts = {}) {
  opts.headers = Object.assign(TOKEN ? {'X-Activesynth-Token': TOKEN} : {}, opts.headers || {});
  opts.credentials = 'same-origin';
  const r = await fetch(path, opts);
  return r.json();
}
function node(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function addLog(who, text) {
  const log = $('log');
  log.appendChild(node('div', text, 'msg ' + who));
  log.scrollTop = log.scrollHeight;
}
async function send() {
  const text = $('msg').value;
  if (!text.trim()) return;
  $('msg').value = '';
  addLog('you', text);
  try {
    const r = await api('/api/chat', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                      body: JSON.stringify({text})});
    addLog('bot', r.reply !== undefined ? r.reply : ('error: ' + r.error));
    if (r.current) current = r.current;
  } catch (e) { addLog('bot', 'error: ' + e); }
  refresh();
}
function fmt(x) {
  if (x === null || x === undefined) return '';
  return typeof x === 'number' ? (Number.isInteger(x) ? String(x) : x.toFixed(4)) : String(x);
}
function table(id, cols, rows) {
  const t = $(id); t.replaceChildren();
  const head = node('tr'); cols.forEach(c => head.appendChild(node('th', c[0]))); t.appendChild(head);
  rows.forEach(r => { const tr = node('tr'); cols.forEach(c => {
    const v = c[1](r); const td = node('td');
    if (v instanceof Node) td.appendChild(v); else td.textContent = fmt(v);
    tr.appendChild(td); }); t.appendChild(tr); });
}
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function drawCurves(curves) {
  const s = $('curves'); s.replaceChildren();
  const pts = curves.series.flatMap(x => x.points);
  if (!pts.length) { s.appendChild(svg('text', {x: 10, y: 20}, 'no metrics yet')); return; }
  const W = 440, H = 230, L = 50, B = 30, T = 10, R = 120;
  const xs = pts.map(p => p.round), ys = pts.map(p => p.accuracy);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys); if (y1 - y0 < 0.01) { y0 -= 0.01; y1 += 0.01; }
  const X = r => L + (r - x0) / (x1 - x0) * (W - L - R), Y = a => H - B - (a - y0) / (y1 - y0) * (H - B - T);
  s.appendChild(svg('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#888'}));
  s.appendChild(svg('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#888'}));
  s.appendChild(svg('text', {x: L - 46, y: T + 10, 'font-size': 10}, y1.toFixed(3)));
  s.appendChild(svg('text', {x: L - 46, y: H - B, 'font-size': 10}, y0.toFixed(3)));
  s.appendChild(svg('text', {x: L, y: H - 8, 'font-size': 10}, 'round ' + x0 + ' … ' + x1 + ' (0 = real data only)'));
  curves.series.forEach((ser, i) => {
    const c = COLORS[i % COLORS.length];
    const p = ser.points.map(q => X(q.round) + ',' + Y(q.accuracy)).join(' ');
    s.appendChild(svg('polyline', {points: p, fill: 'none', stroke: c, 'stroke-width': 2, class: 'series',
                                   'data-name': ser.name}));
    ser.points.forEach(q => s.appendChild(svg('circle', {cx: X(q.round), cy: Y(q.accuracy), r: 3, fill: c})));
    s.appendChild(svg('text', {x: W - R + 8, y: T + 14 + 14 * i, fill: c, 'font-size': 11}, ser.name));
  });
}
function render(v) {
  const st = v.status || {};
  $('state').textContent = (st.state || '') + (st.busy ? ' (working)' : '') + (st.paused ? ' (paused)' : '');
  const lines = [`${v.id}: ${st.state || ''}${st.busy ? ' (working)' : ''}`];
  if (st.test_accuracy !== undefined && st.test_accuracy !== null) lines.push('final test accuracy ' + fmt(st.test_accuracy));
  if (st.stop) lines.push('stop requested: ' + st.stop.reason);
  if (st.overrides && Object.keys(st.overrides).length) lines.push('next round: ' + JSON.stringify(st.overrides));
  if (st.approvals && Object.keys(st.approvals).length) lines.push('batch decisions: ' + JSON.stringify(st.approvals));
  (st.events || []).forEach(e => lines.push(`${e.ts.slice(11, 19)} ${e.round ? 'r' + e.round + ' ' : ''}${e.stage}: ${e.message}`));
  const box = $('status'); const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.textContent = lines.join('\n'); if (atEnd) box.scrollTop = box.scrollHeight;
  drawCurves(v.curves);
  table('rounds', [['round', r => r.round], ['stage', r => r.stage], ['synthetic', r => r.accepted_total],
                   ['weight', r => r.weight], ['test acc', r => r.test_accuracy], ['macro-F1', r => r.test_macro_f1],
                   ['selection F1', r => r.selection_macro_f1], ['rolled back', r => r.rolled_back]], v.rounds || []);
  const pc = (v.report && v.report.per_class) || [];
  const maxU = Math.max(1e-9, ...pc.map(r => r.mean_uncertainty || 0));
  table('perclass', [['label', r => r.label], ['mean uncertainty', r => {
      const d = node('span'); const b = node('span', null, 'bar'); b.style.width = (100 * (r.mean_uncertainty || 0) / maxU) + 'px';
      d.appendChild(b); d.appendChild(node('span', ' ' + fmt(r.mean_uncertainty))); return d; }],
    ['dev error rate', r => r.dev_error_rate], ['selected', r => r.n_selected]], pc);
  const maps = (v.plots || []).filter(p => p.endsWith('cluster_map.png'));
  const src = maps.length ? `/api/plot?id=${enc(v.id)}&path=${enc(maps[maps.length - 1])}${URL_TOKEN ? '&token=' + enc(URL_TOKEN) : ''}` : '';
  if (src !== plotSrc) { plotSrc = src; if (src) $('clustermap').src = src; else $('clustermap').removeAttribute('src'); }
  const pr = $('prompts'); const have = Array.from(pr.children).map(b => b.textContent).join('|');
  if (have !== (v.prompts || []).join('|')) {
    pr.replaceChildren();
    (v.prompts || []).forEach(ref => { const b = node('button', ref); b.onclick = () => showPrompt(ref); pr.appendChild(b); });
  }
}
async function showPrompt(ref) {
  const p = await api(`/api/prompt?id=${enc(current)}&ref=${enc(ref)}`);
  $('promptsrc').hidden = false; $('promptsrc').textContent = p.source || p.error;
}
async function loadSamples() {
  if (!current) return;
  const q = `/api/samples?id=${enc(current)}&kind=${enc($('kind').value)}&label=${enc($('label').value)}&limit=100`;
  const s = await api(q);
  table('samples', [['', r => r.accepted ? 'accepted' : 'rejected'], ['label', r => r.label],
                    ['template', r => r.template], ['text', r => r.text], ['filter reasons', r => r.reasons.join('; ')]],
        s.samples || []);
}
async function refresh() {
  try {
    const r = await api('/api/runs');
    const sel = $('run'); const ids = r.runs.map(x => x.id);
    if (r.current && r.current !== current && ids.includes(r.current) && !current) current = r.current;
    if (r.current && ids.includes(r.current) && sel.dataset.follow !== 'no') current = r.current;
    if (!current && ids.length) current = ids[0];
    const labels = r.runs.map(x => x.id + ' [' + (x.state || '') + ']');
    if (Array.from(sel.options).map(o => o.text).join('|') !== labels.join('|')) {
      sel.replaceChildren(); r.runs.forEach((x, i) => sel.appendChild(new Option(labels[i], x.id)));
    }
    if (current) {
      const id = current; sel.value = id;
      const view = await api('/api/run?id=' + enc(id));
      if (id === current) render(view);  // a slower answer for a run no longer selected is dropped
    }
  } catch (e) { $('status').textContent = 'error: ' + e; }
}
$('send').onclick = send;
$('msg').addEventListener('keydown', e => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); } });
$('run').onchange = () => { current = $('run').value; $('run').dataset.follow = 'no'; refresh(); loadSamples(); };
$('load').onclick = loadSamples;
refresh(); setInterval(refresh, 2000);
"""


def page_html(token: str | None) -> str:
    """The page with ``token`` (the server's generated POST token) in its ``activesynth-token`` meta tag;
    ``None`` leaves it empty (a user ``--token`` comes from the address instead and never sits in the page)."""
    return PAGE.replace("%TOKEN%", html.escape(token or "", quote=True), 1)
