// The dashboard page's HTML and CSS (the script is in dashboard-script.ts): plain files served as they are, no build step.

export { DASHBOARD_SCRIPT } from './dashboard-script';

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mesh-agent dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/style.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<header>
  <h1>mesh-agent</h1>
  <span id="window"></span>
  <span id="updated" role="status">loading ...</span>
</header>
<main>
  <section id="graph-section">
    <h2>Service graph <small>requests per second, error ratio; green &lt; 1 % errors, amber &lt; 5 %, red above</small></h2>
    <svg id="graph" role="img" aria-label="service graph" width="100%" height="160"></svg>
  </section>
  <section>
    <h2>Services</h2>
    <table id="services"><thead><tr><th>service</th><th>nodes</th><th class="n">req/s</th><th class="n">errors</th><th class="n">p50 ms</th><th class="n">p99 ms</th><th class="n">requests</th><th>codes</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Agents</h2>
    <table id="agents"><thead><tr><th>node</th><th>connected</th><th>version</th><th>services</th><th>policy</th><th>certificates (expires in)</th><th>last seen</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Policy <span id="policy-version"></span></h2>
    <table id="documents"><thead><tr><th>kind</th><th>namespace</th><th>name</th><th class="n">since version</th></tr></thead><tbody></tbody></table>
    <h3>History</h3>
    <table id="history"><thead><tr><th class="n">version</th><th>when</th><th>who</th><th>operation</th><th>changes</th></tr></thead><tbody></tbody></table>
  </section>
</main>
</body>
</html>
`;

export const LOGIN_NEEDED_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mesh-agent dashboard: log in</title></head>
<body>
<h1>Log in to the dashboard</h1>
<p>This browser has no dashboard session, or the login link was already used or is more than two minutes old.
On the server's machine, run</p>
<pre>mesh-agent dashboard</pre>
<p>and open the link it prints (each link works once). See docs/dashboard.md.</p>
</body>
</html>
`;

export const DASHBOARD_STYLE = `
:root { --ok: #2f9e44; --warn: #e8a400; --bad: #d9480f; --idle: #adb5bd; --line: #dee2e6; --ink: #212529; --muted: #6c757d; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f8f9fa; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .6em 1.2em; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.2em; margin: 0; }
header span { color: var(--muted); }
main { padding: 0 1.2em 2em; max-width: 1200px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin-top: 1em; padding: .6em 1em 1em; }
h2 { font-size: 1.05em; margin: .3em 0 .6em; }
h2 small { font-weight: normal; color: var(--muted); margin-left: .6em; }
h3 { font-size: .95em; margin: 1em 0 .4em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .9em; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: var(--muted); font-style: italic; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); } .muted { color: var(--muted); }
#graph .node rect { fill: #e7f5ff; stroke: #1c7ed6; rx: 6; }
#graph .node text { font-size: 13px; text-anchor: middle; dominant-baseline: middle; }
#graph .edge line { stroke-width: 2.5; }
#graph .edge text { font-size: 11px; text-anchor: middle; }
#graph .edge.ok line { stroke: var(--ok); } #graph .edge.ok text, #graph .edge.ok polygon { fill: var(--ok); }
#graph .edge.warn line { stroke: var(--warn); } #graph .edge.warn text, #graph .edge.warn polygon { fill: var(--warn); }
#graph .edge.bad line { stroke: var(--bad); } #graph .edge.bad text, #graph .edge.bad polygon { fill: var(--bad); }
#graph .edge.idle line { stroke: var(--idle); } #graph .edge.idle polygon { fill: var(--idle); } #graph .edge.idle text { fill: var(--muted); }
`;
