// The dashboard page's script (served as /dashboard/app.js): fetches the JSON every few seconds and draws the tables and the SVG service graph.
//
// Plain browser JavaScript kept as a string, so the server (and the single-file binary) serves it with no build
// step and no file to find at run time. It builds every element with createElement/textContent: names that came
// from agents are never parsed as HTML.

export const DASHBOARD_SCRIPT = String.raw`'use strict';
(function () {
  var REFRESH_MS = 5000;
  var SVG = 'http://www.w3.org/2000/svg';

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function row(cells) {
    var tr = el('tr');
    cells.forEach(function (c) {
      var td = el('td', c.cls ? { class: c.cls } : {}, c.text);
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(id, rows, columns, empty) {
    var body = document.querySelector('#' + id + ' tbody');
    body.replaceChildren();
    if (rows.length === 0) body.appendChild(row([{ text: empty, cls: 'empty' }])).firstChild.setAttribute('colspan', String(columns));
    rows.forEach(function (r) { body.appendChild(row(r)); });
  }
  function health(ratio, rps) {
    if (!rps) return 'idle';
    return ratio >= 0.05 ? 'bad' : ratio >= 0.01 ? 'warn' : 'ok';
  }
  function pct(ratio) { return (ratio * 100).toFixed(ratio > 0 && ratio < 0.01 ? 2 : 1) + ' %'; }
  function ms(v) { return v === null ? '-' : String(v); }
  function rate(v) { return v >= 10 ? v.toFixed(0) : v >= 0.1 ? v.toFixed(2) : v.toFixed(3); }
  function duration(seconds) {
    if (seconds <= 0) return 'expired';
    if (seconds < 120) return seconds + ' s';
    if (seconds < 7200) return Math.round(seconds / 60) + ' min';
    if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
    return Math.round(seconds / 86400) + ' d';
  }
  function codes(c) {
    return Object.keys(c).map(function (k) { return (k === '0' ? 'none' : k) + ': ' + c[k]; }).join(', ');
  }
  function get(path) {
    return fetch(path, { credentials: 'same-origin', cache: 'no-store' }).then(function (res) {
      if (res.status === 401) { location.assign('/dashboard/login'); throw new Error('session ended'); }
      if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
      return res.json();
    });
  }

  function drawServices(data) {
    document.getElementById('window').textContent = 'last ' + data.windowSeconds + ' s';
    fill('services', data.services.map(function (s) {
      var h = health(s.errorRatio, s.rps);
      return [
        { text: s.name }, { text: s.nodes.join(', ') || '-' , cls: 'muted' }, { text: rate(s.rps), cls: 'n' },
        { text: pct(s.errorRatio), cls: 'n ' + (h === 'idle' ? 'muted' : h) }, { text: ms(s.p50Ms), cls: 'n' }, { text: ms(s.p99Ms), cls: 'n' },
        { text: s.requests, cls: 'n' }, { text: codes(s.codes), cls: 'muted' },
      ];
    }), 8, 'no services yet');
  }

  // Layered layout: a service sits one column right of its furthest caller (cycles are cut), rows in name order.
  function layout(nodes, edges) {
    var depth = {};
    nodes.forEach(function (n) { depth[n.id] = 0; });
    for (var pass = 0; pass < nodes.length; pass++) {
      var moved = false;
      edges.forEach(function (e) {
        if (e.source !== e.destination && depth[e.destination] < depth[e.source] + 1 && depth[e.source] + 1 < nodes.length) {
          depth[e.destination] = depth[e.source] + 1;
          moved = true;
        }
      });
      if (!moved) break;
    }
    var columns = {};
    nodes.forEach(function (n) { (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n.id); });
    var at = {}, rows = 1;
    Object.keys(columns).forEach(function (d) {
      columns[d].forEach(function (id, i) { at[id] = { x: 90 + Number(d) * 320, y: 40 + i * 80 }; });
      rows = Math.max(rows, columns[d].length);
    });
    return { at: at, height: 40 + rows * 80, width: 180 + Object.keys(columns).length * 320 };
  }

  function drawGraph(data) {
    var g = document.getElementById('graph');
    g.replaceChildren();
    if (data.nodes.length === 0) {
      g.appendChild(svg('text', { x: 20, y: 30, class: 'muted' }, 'no services yet'));
      return;
    }
    var l = layout(data.nodes, data.edges);
    g.setAttribute('height', String(l.height));
    g.setAttribute('viewBox', '0 0 ' + Math.max(l.width, 600) + ' ' + l.height);
    data.edges.forEach(function (e) {
      var a = l.at[e.source], b = l.at[e.destination];
      if (!a || !b) return;
      var h = health(e.errorRatio, e.rps);
      var grp = svg('g', { class: 'edge ' + h, 'data-source': e.source, 'data-destination': e.destination, 'data-rps': e.rps });
      grp.appendChild(svg('title', {}, e.source + ' -> ' + e.destination + ': ' + e.requests + ' requests, ' + e.errors + ' errors, p50 ' + ms(e.p50Ms) + ' ms, p99 ' + ms(e.p99Ms) + ' ms'));
      var x1 = a.x + 70, x2 = b.x - 74, y1 = a.y, y2 = b.y;
      if (e.source === e.destination) { x1 = a.x + 20; x2 = a.x + 40; y1 = a.y - 18; y2 = a.y - 18; }
      grp.appendChild(svg('line', { x1: x1, y1: y1, x2: x2, y2: y2 }));
      var ang = Math.atan2(y2 - y1, x2 - x1), s = 9;
      var p = [x2, y2, x2 - s * Math.cos(ang - 0.45), y2 - s * Math.sin(ang - 0.45), x2 - s * Math.cos(ang + 0.45), y2 - s * Math.sin(ang + 0.45)];
      grp.appendChild(svg('polygon', { points: p[0] + ',' + p[1] + ' ' + p[2] + ',' + p[3] + ' ' + p[4] + ',' + p[5] }));
      grp.appendChild(svg('text', { class: 'edge-label', x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 8 }, rate(e.rps) + ' req/s, ' + pct(e.errorRatio) + ' err'));
      g.appendChild(grp);
    });
    data.nodes.forEach(function (n) {
      var p = l.at[n.id];
      var grp = svg('g', { class: 'node', 'data-id': n.id });
      grp.appendChild(svg('rect', { x: p.x - 70, y: p.y - 18, width: 140, height: 36 }));
      grp.appendChild(svg('text', { x: p.x, y: p.y }, n.id));
      g.appendChild(grp);
    });
  }

  function drawAgents(data) {
    fill('agents', data.agents.map(function (a) {
      var certs = a.certificates.map(function (c) { return c.identity.replace(/^spiffe:\/\/[^/]+\//, '') + ' (' + duration(c.expiresInSeconds) + ')'; }).join(', ');
      var soonest = Math.min.apply(null, a.certificates.map(function (c) { return c.expiresInSeconds; }).concat([Infinity]));
      return [
        { text: a.nodeName }, { text: a.connected ? 'yes' : 'no', cls: a.connected ? 'ok' : 'bad' }, { text: a.version || '-' },
        { text: a.services.join(', ') || '-' }, { text: a.policyError ? 'refused: ' + a.policyError : a.policyVersion === null ? '-' : 'v' + a.policyVersion, cls: a.policyError ? 'bad' : '' },
        { text: certs || '-', cls: soonest < 3600 ? 'warn' : '' }, { text: a.lastSeenAt ? new Date(a.lastSeenAt).toLocaleString() : 'never', cls: 'muted' },
      ];
    }), 7, 'no agents enrolled');
  }

  function drawPolicies(data) {
    document.getElementById('policy-version').textContent = data.version ? 'version ' + data.version : '(none applied: Istio defaults)';
    fill('documents', data.documents.map(function (d) {
      return [{ text: d.kind }, { text: d.namespace }, { text: d.name }, { text: d.version, cls: 'n' }];
    }), 4, 'no documents');
    fill('history', data.history.map(function (v) {
      var changes = v.changes.map(function (c) { return c.action + ' ' + c.kind + ' ' + c.namespace + '/' + c.name; }).join('; ');
      return [{ text: v.version, cls: 'n' }, { text: new Date(v.createdAt).toLocaleString() }, { text: v.actor }, { text: v.operation + (v.rollbackTo ? ' to ' + v.rollbackTo : '') }, { text: changes || '-', cls: 'muted' }];
    }), 5, 'no versions yet');
  }

  function refresh() {
    Promise.all([get('/v1/dashboard/services'), get('/v1/dashboard/graph'), get('/v1/dashboard/agents'), get('/v1/dashboard/policies')])
      .then(function (r) {
        drawServices(r[0]); drawGraph(r[1]); drawAgents(r[2]); drawPolicies(r[3]);
        var u = document.getElementById('updated');
        u.textContent = 'updated ' + new Date().toLocaleTimeString();
        u.className = '';
        document.body.setAttribute('data-loaded', String(Date.now()));
      })
      .catch(function (err) {
        var u = document.getElementById('updated');
        u.textContent = 'update failed: ' + err.message;
        u.className = 'bad';
      })
      .finally(function () { setTimeout(refresh, REFRESH_MS); });
  }
  refresh();
})();
`;
