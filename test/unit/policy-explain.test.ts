// explainRequest: the rule, destinations, timeouts/retries/faults, mTLS mode and authorization for one request, from
// the same compiled policy the proxy uses; and the CLI's text form.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderExplain } from '../../src/cli/explain-command';
import { compilePolicy, explainRequest, parsePolicyText } from '../../src/policy';

const POLICY = compilePolicy(
  parsePolicyText(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 }, trafficPolicy: { loadBalancer: { simple: RANDOM } } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - name: canary-users
      match: [{ headers: { end-user: { exact: jason } }, sourceLabels: { track: canary } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
      timeout: 2s
      fault: { abort: { percentage: { value: 50 }, httpStatus: 418 } }
    - match: [{ uri: { prefix: /old } }]
      redirect: { uri: /new, redirectCode: 301 }
    - match: [{ uri: { prefix: /reviews } }]
      route:
        - { destination: { host: reviews, subset: v1 }, weight: 90 }
        - { destination: { host: reviews, subset: v2 }, weight: 10 }
      retries: { attempts: 3, retryOn: 5xx, perTryTimeout: 500ms }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin }
spec:
  selector: { matchLabels: { app: reviews } }
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: only-web, namespace: default }
spec:
  selector: { matchLabels: { app: db } }
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["mesh.local/ns/default/sa/web"] } }] }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: db, namespace: default }
spec:
  selector: { matchLabels: { app: db } }
  mtls: { mode: STRICT }
  portLevelMtls: { 9000: { mode: PERMISSIVE } }
`),
);

describe('explainRequest', () => {
  const web = { name: 'web', namespace: 'default' };
  const reviews = { name: 'reviews', namespace: 'default' };
  const db = { name: 'db', namespace: 'default' };

  it('names the matching rule with its timeout and fault, and the subset with its own policy', () => {
    const r = explainRequest(POLICY, { from: web, fromLabels: { track: 'canary' }, to: reviews, method: 'GET', path: '/x', headers: { 'end-user': 'jason' } });
    assert.equal(r.route.source, 'VirtualService reviews.default');
    assert.equal(r.route.rule, 0);
    assert.equal(r.route.name, 'canary-users');
    assert.deepEqual(r.route.destinations, [{ service: 'reviews.default', subset: 'v2', weight: 100, subsetLabels: { version: 'v2' }, ownPolicy: true, loadBalancer: 'RANDOM' }]);
    assert.equal(r.route.timeoutMs, 2000);
    assert.deepEqual(r.route.fault, { abort: { percent: 50, httpStatus: 418 } });
    const without = explainRequest(POLICY, { from: web, to: reviews, method: 'GET', path: '/x', headers: { 'end-user': 'jason' } });
    assert.equal(without.route.action, 'no-route', 'the caller lacks the sourceLabels of rule 0, and no other rule matches /x');
  });

  it('shows a weighted split with retries, a redirect, and a DENY by rule', () => {
    const split = explainRequest(POLICY, { from: web, to: reviews, method: 'GET', path: '/reviews/1' });
    assert.deepEqual(split.route.destinations.map((d) => [d.subset, d.weight, d.loadBalancer, d.ownPolicy]), [['v1', 90, 'ROUND_ROBIN', false], ['v2', 10, 'RANDOM', true]]);
    assert.deepEqual(split.route.retries, { attempts: 3, perTryTimeoutMs: 500, retryOn: ['5xx'] });
    assert.equal(explainRequest(POLICY, { from: web, to: reviews, method: 'GET', path: '/old/a' }).route.action, 'redirect');
    const admin = explainRequest(POLICY, { from: web, to: reviews, method: 'POST', path: '/admin/users' });
    assert.equal(admin.authorization.allowed, false);
    assert.equal(admin.authorization.by, 'default/deny-admin rule 0');
    assert.match(admin.authorization.message!, /deny-admin/);
  });

  it('TCP: the default route, the port-level mTLS mode, and an ALLOW that only the right principal passes', () => {
    const fromWeb = explainRequest(POLICY, { from: web, to: db, port: 9000 });
    assert.equal(fromWeb.request.protocol, 'tcp');
    assert.equal(fromWeb.route.source, 'default');
    assert.equal(fromWeb.mtls.mode, 'PERMISSIVE');
    assert.equal(explainRequest(POLICY, { from: web, to: db, port: 5432 }).mtls.mode, 'STRICT');
    assert.equal(fromWeb.authorization.allowed, true);
    assert.equal(fromWeb.authorization.by, 'default/only-web rule 0');
    const fromBatch = explainRequest(POLICY, { from: { name: 'batch', namespace: 'default' }, to: db, port: 5432 });
    assert.equal(fromBatch.authorization.allowed, false);
    assert.equal(fromBatch.authorization.reason, 'no-allow-match');
  });

  it('renders every part as text', () => {
    const text = renderExplain(explainRequest(POLICY, { from: web, to: reviews, method: 'GET', path: '/reviews/1' }));
    assert.match(text, /^GET \/reviews\/1 from web\.default to reviews\.default$/m);
    assert.match(text, /^route: +VirtualService reviews\.default http\[2\] -> route$/m);
    assert.match(text, /^ {2}destination: +reviews\.default subset v2 \{"version":"v2"\} weight 10, RANDOM \(own cluster\)$/m);
    assert.match(text, /^retries: +3 on 5xx, 500 ms per try$/m);
    assert.match(text, /^mTLS: +STRICT/m);
    assert.match(text, /^authorization: +ALLOW \(no-allow-policy\)$/m);
  });
});
