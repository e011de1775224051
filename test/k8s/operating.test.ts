/**
 * What the chart gives the people who operate netoken, checked for real: the alerts pass
 * `promtool check rules` and their unit tests (`promtool test rules`); every query of the
 * Grafana dashboard parses; every series the dashboard and the alerts query is one that a
 * real agent (cluster mode, in a network namespace, marking and enforcing) and a real operator
 * (against a real kube-apiserver) export; and `netoken inspect` reads a policy and its Secret
 * through a kubeconfig with exactly the RBAC examples/inspect-rbac.yaml grants.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { COUNTERS } from '../../src/lib/abi.js';
import { buildFrame, tokenOption } from '../../src/lib/packet.js';
import { writePcap } from '../../src/lib/pcap.js';
import { BIND_ALL, epochAt, keyedToken } from '../../src/lib/siphash.js';
import { agentMetricsIn, type AgentRun } from '../lib/agent.js';
import { keySecret, nodeYaml, tokenPolicy, yamlStream } from '../lib/manifests.js';
import { type Topology } from '../lib/netns.js';
import { connect, type TcpServer } from '../lib/tcp.js';
import { type K8sObject, type OperatorRun, parseObjects, policyAttached, render } from './chart.js';
import { type TestCluster, freePorts, repoRoot, toolPaths, type CommandResult } from './cluster.js';
import { ClusterNodes, NS } from './node-agents.js';
import { type Inventory, addExposition, exprNeeds } from './promql.js';
import { waitUntil } from '../../src/lib/wait.js';
import { reportedPolicies } from '../../src/agent/node-state.js';

const NODE = 'node-ops';
const STATIC_TOKEN = randomBytes(8);
const GUARD_KEY = randomBytes(16);
const EPOCH_SECONDS = 3600;
const RULE_TESTS = join(repoRoot, 'test/k8s/prometheus-rules.test.yaml');

/** Labels Prometheus gives every series it scrapes, beyond those the process exports. */
const TARGET_LABELS = new Set(['job', 'instance']);

interface RuleGroup {
  name: string;
  rules: { alert?: string; record?: string; expr: string; for?: string }[];
}
interface Dashboard {
  panels: { title: string; type: string; targets?: { expr: string }[] }[];
  templating: { list: { name: string; type: string; query?: string | { query: string } }[] };
}

function promtool(args: string[], cwd?: string): Promise<CommandResult> {
  return new Promise((res) => {
    execFile(toolPaths().promtool, args, { cwd, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) =>
      res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The chart rendered with the alerts and the dashboard on. */
async function monitoringObjects(): Promise<{ groups: RuleGroup[]; dashboard: Dashboard }> {
  const objects = parseObjects(
    await render({ namespace: NS, set: ['metrics.prometheusRule.enabled=true', 'metrics.dashboard.enabled=true'] }),
  );
  const rule = objects.find((o) => o.kind === 'PrometheusRule') as (K8sObject & { spec: { groups: RuleGroup[] } }) | undefined;
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'netoken-dashboard') as
    (K8sObject & { data: Record<string, string> }) | undefined;
  assert.ok(rule, 'the chart renders a PrometheusRule');
  assert.ok(cm, 'the chart renders the dashboard ConfigMap');
  return { groups: rule.spec.groups, dashboard: JSON.parse(cm.data['netoken.json'] as string) as Dashboard };
}

/** Every PromQL expression of the dashboard (panels and variables), with where it is. */
function dashboardExprs(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of d.panels) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: t.expr });
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q);
    assert.ok(m, `variable ${v.name}: label_values(metric, label), got ${q}`);
    // The series a label_values() query needs: the metric, with the label present.
    out.push({ where: `variable ${v.name}`, expr: `${m[1]}{${m[2]}!=""}` });
  }
  return out;
}

/** Grafana's variables as a Prometheus would see them once Grafana has filled them in. */
function withVariables(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__range|\$__interval/g, '5m').replace(/\$(node|policy)/g, '.*');
}

const tmp = mkdtempSync(join(tmpdir(), 'nttest-operating-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("the chart's alerts and dashboard, with promtool", () => {
  let groups: RuleGroup[];
  let dashboard: Dashboard;

  before(async () => {
    ({ groups, dashboard } = await monitoringObjects());
  });

  test('promtool check rules accepts the rendered alerts', async () => {
    writeFileSync(join(tmp, 'rules.yaml'), stringify({ groups }));
    const r = await promtool(['check', 'rules', join(tmp, 'rules.yaml')]);
    assert.equal(r.code, 0, `promtool check rules:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /SUCCESS: 8 rules found/);
  });

  test('promtool test rules: every alert fires when it should, with its labels and annotations, and not before', async () => {
    writeFileSync(join(tmp, 'rules.yaml'), stringify({ groups }));
    copyFileSync(RULE_TESTS, join(tmp, 'rules.test.yaml'));
    const r = await promtool(['test', 'rules', 'rules.test.yaml'], tmp);
    assert.equal(r.code, 0, `promtool test rules:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /SUCCESS/);
    const tested = new Set([...readFileSync(RULE_TESTS, 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    const alerts = groups.flatMap((g) => g.rules.map((x) => x.alert)).filter((a): a is string => a !== undefined);
    assert.deepEqual(
      alerts.filter((a) => !tested.has(a)),
      [],
      'alerts without a unit test',
    );
  });

  test("every dashboard query parses, with Prometheus's own parser (promtool) and the UI's grammar", async () => {
    const exprs = dashboardExprs(dashboard);
    assert.ok(exprs.length >= 20, `the dashboard has its queries: ${exprs.length}`);
    for (const e of exprs) assert.deepEqual(exprNeeds(withVariables(e.expr)).errors, [], `${e.where}: ${e.expr}`);
    const asRules = {
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map((e, i) => ({ record: `netoken:dashboard_query_${i}`, expr: withVariables(e.expr) })),
        },
      ],
    };
    writeFileSync(join(tmp, 'dashboard-rules.yaml'), stringify(asRules));
    const r = await promtool(['check', 'rules', join(tmp, 'dashboard-rules.yaml')]);
    assert.equal(r.code, 0, `promtool check rules on the dashboard's queries:\n${r.stdout}${r.stderr}`);
  });
});

describe('the dashboard and the alerts against a real agent and operator', () => {
  let env: ClusterNodes;
  let cluster: TestCluster;
  let topo: Topology;
  let agent: AgentRun;
  let server: TcpServer;
  let operator: OperatorRun;
  let operatorPort: number;
  let guardPort: number;

  before(async () => {
    env = await ClusterNodes.start('ops');
    ({ cluster, topo } = env);
    server = await env.server();
    [operatorPort, guardPort] = (await freePorts(2)) as [number, number];
    await cluster.apply(
      yamlStream([
        keySecret('web-token', { current: STATIC_TOKEN }, { namespace: NS }),
        keySecret('guard-key', { current: GUARD_KEY }, { namespace: NS }),
        nodeYaml(NODE, { role: 'edge' }),
        tokenPolicy(
          'web',
          `interfaces: {names: [${topo.client.dev}]}
token: {mode: Static, secretRef: {name: web-token}}
egress: {destinations: [{cidr: ${topo.server.ipv4}/32, ports: [${server.port}]}]}`,
        ),
        tokenPolicy(
          'guard',
          `interfaces: {names: [${topo.client.dev}]}
token: {mode: Keyed, secretRef: {name: guard-key}, epochSeconds: ${EPOCH_SECONDS}}
ingress: {action: Enforce, ports: [${guardPort}]}`,
        ),
      ]),
    );
    agent = await env.startAgent('client', NODE, 'ops');
    operator = await env.startOperator('op-ops', { metricsPort: operatorPort });
    await env.nodeState(
      NODE,
      agent,
      (s) => reportedPolicies(s.status).length === 2 && reportedPolicies(s.status).every((p) => policyAttached(s, p.name)),
      'both policies attached',
    );
    for (const name of ['web', 'guard']) {
      await waitUntil(
        `policy ${name} Ready`,
        30_000,
        async () => {
          const r = await cluster.kubectl([
            'get',
            'tokenpolicy',
            name,
            '-o',
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
          ]);
          return r.stdout === 'True' || undefined;
        },
        { everyMs: 300, context: () => operator.log().slice(-3000) },
      );
    }
    // Traffic: a marked handshake out, and an unmarked SYN in at the enforcing port (dropped).
    assert.ok((await connect(topo.client.ns, topo.server.ipv4, server.port)).ok, 'a marked handshake');
    assert.equal(
      (await connect(topo.server.ns, topo.client.ipv4, guardPort, { timeoutMs: 700 })).connected,
      false,
      'an unmarked SYN is dropped',
    );
  });

  after(async () => {
    await env?.stop();
  });

  const scrapeAgent = (): Promise<string> => agentMetricsIn(topo.client.ns);
  const scrapeOperator = async (): Promise<string> => (await fetch(`http://127.0.0.1:${operatorPort}/metrics`)).text();

  test('the new series carry what the dashboard and alerts read: node, hooks, enforcing, readiness, policy conditions and nodes', async () => {
    const a = await scrapeAgent();
    const o = await scrapeOperator();
    const node = `node="${NODE}"`;
    assert.match(a, new RegExp(`^netoken_agent_ready\\{${node}\\} 1$`, 'm'));
    assert.match(
      a,
      new RegExp(
        `^netoken_agent_hook_attached\\{interface="${topo.client.dev}",direction="egress",mode="tcx",${node}\\} 1$`,
        'm',
      ),
    );
    assert.match(
      a,
      new RegExp(
        `^netoken_agent_hook_attached\\{interface="${topo.client.dev}",direction="ingress",mode="tcx",${node}\\} 1$`,
        'm',
      ),
    );
    assert.match(a, new RegExp(`^netoken_agent_enforcing\\{policy="guard",interface="${topo.client.dev}",${node}\\} 1$`, 'm'));
    assert.match(
      a,
      new RegExp(`^netoken_packets_total\\{policy="web",interface="${topo.client.dev}",reason="marked",${node}\\} [1-9]`, 'm'),
    );
    assert.match(
      a,
      new RegExp(
        `^netoken_packets_total\\{policy="guard",interface="${topo.client.dev}",reason="verify_dropped",${node}\\} [1-9]`,
        'm',
      ),
    );
    for (const w of ['tokenpolicies', 'node', 'secrets'])
      assert.match(a, new RegExp(`^netoken_agent_watch_restarts_total\\{resource="${w}",${node}\\} \\d+$`, 'm'));
    for (const p of ['web', 'guard']) {
      assert.match(
        o,
        new RegExp(`^netoken_policy_condition\\{policy="${p}",type="Ready",status="True",reason="AllNodesReady"\\} 1$`, 'm'),
      );
      assert.match(
        o,
        new RegExp(`^netoken_policy_condition\\{policy="${p}",type="Degraded",status="False",reason="AsExpected"\\} 1$`, 'm'),
      );
      assert.match(o, new RegExp(`^netoken_policy_nodes_selected\\{policy="${p}"\\} 1$`, 'm'));
      assert.match(o, new RegExp(`^netoken_policy_nodes_ready\\{policy="${p}"\\} 1$`, 'm'));
      assert.match(o, new RegExp(`^netoken_policy_nodes_failed\\{policy="${p}"\\} 0$`, 'm'));
    }
    for (const text of [a, o]) {
      for (const k of [STATIC_TOKEN, GUARD_KEY])
        for (const enc of [k.toString('hex'), k.toString('base64')]) assert.ok(!text.includes(enc), 'a key in metrics');
    }
  });

  test('every series the dashboard and the alerts query is exported by the agent or the operator', async () => {
    const inv: Inventory = new Map();
    addExposition(inv, await scrapeAgent());
    addExposition(inv, await scrapeOperator());
    const { groups, dashboard } = await monitoringObjects();
    // The job labels the chart's ServiceMonitors give our scrapes (metrics.agentJob, metrics.operatorJob).
    const monitors = parseObjects(await render({ namespace: NS, set: ['metrics.serviceMonitor.enabled=true'] })).filter(
      (x) => x.kind === 'ServiceMonitor',
    ) as (K8sObject & { spec: { endpoints: { relabelings: { targetLabel: string; replacement: string }[] }[] } })[];
    const jobs = new Set(
      monitors.flatMap((m) =>
        m.spec.endpoints.flatMap((e) => e.relabelings.filter((r) => r.targetLabel === 'job').map((r) => r.replacement)),
      ),
    );
    assert.deepEqual([...jobs].sort(), ['netoken-agent', 'netoken-operator']);
    const exprs = [
      ...groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert ?? r.record}`, expr: r.expr }))),
      ...dashboardExprs(dashboard),
    ];
    const problems: string[] = [];
    let selectors = 0;
    for (const { where, expr } of exprs) {
      const needs = exprNeeds(withVariables(expr));
      problems.push(...needs.errors.map((e) => `${where}: ${e}`));
      const labelsInExpr = new Set<string>(TARGET_LABELS);
      for (const sel of needs.selectors) {
        selectors++;
        if (sel.metric === 'up') {
          // Prometheus's own series for each scrape: only the job of our scrapes may be asked for.
          for (const m of sel.matchers) {
            if (m.label !== 'job' || m.op !== '=' || !jobs.has(m.value))
              problems.push(`${where}: up{${m.label}${m.op}"${m.value}"} is not one of our scrape jobs`);
          }
          continue;
        }
        const labels = inv.get(sel.metric);
        if (!labels) {
          problems.push(`${where}: ${sel.metric} is exported by neither the agent nor the operator`);
          continue;
        }
        for (const l of labels.keys()) labelsInExpr.add(l);
        for (const m of sel.matchers) {
          if (!labels.has(m.label) && !TARGET_LABELS.has(m.label)) {
            problems.push(`${where}: ${sel.metric} has no label ${m.label} (it has: ${[...labels.keys()].join(', ')})`);
            continue;
          }
          if (m.op !== '=' && m.op !== '=~') continue;
          const re = new RegExp(`^(?:${m.op === '=' ? m.value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : m.value})$`);
          let known = [...(labels.get(m.label) ?? [])];
          if (sel.metric === 'netoken_packets_total' && m.label === 'reason') known = [...COUNTERS];
          // A condition's reason is the operator's word for a state; types and statuses are fixed.
          if (sel.metric === 'netoken_policy_condition' && m.label === 'reason') continue;
          if (!known.some((v) => re.test(v)))
            problems.push(`${where}: ${sel.metric}{${m.label}${m.op}"${m.value}"} matches none of ${known.join(', ')}`);
        }
      }
      for (const g of needs.groupingLabels) {
        if (!labelsInExpr.has(g) && g !== 'le') problems.push(`${where}: groups by ${g}, a label none of its metrics has`);
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(selectors >= 30, `selectors checked: ${selectors}`);
  });

  test('netoken inspect judges SYNs with a policy and Secret read through a kubeconfig with the documented RBAC', async () => {
    await cluster.apply(readFileSync(join(repoRoot, 'examples/inspect-rbac.yaml'), 'utf8'));
    await cluster.apply(`apiVersion: v1
kind: ServiceAccount
metadata: {name: oncall, namespace: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: ${NS}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: oncall-netoken-inspect}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: netoken-inspect}
subjects: [{kind: ServiceAccount, name: oncall, namespace: ${NS}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: oncall-netoken-inspect, namespace: ${NS}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: netoken-inspect}
subjects: [{kind: ServiceAccount, name: oncall, namespace: ${NS}}]
`);
    // A SYN to the enforcing port with a valid token, and one with a forged token.
    const flow = { src: topo.server.ipv4, dst: topo.client.ipv4, sport: 40100, dport: guardPort, seq: 99 };
    const good = keyedToken(GUARD_KEY, flow, BIND_ALL, epochAt(Date.now(), EPOCH_SECONDS));
    const frames = [good, randomBytes(8)].map((v, i) =>
      buildFrame({
        src: flow.src,
        dst: flow.dst,
        tcp: { sport: flow.sport + i, dport: guardPort, seq: flow.seq, options: tokenOption(253, 0x4e54, v) },
      }),
    );
    const file = join(tmp, 'guard.pcap');
    writeFileSync(file, writePcap(frames, Date.now() / 1000));
    const inspect = (kubeconfig: string): Promise<CommandResult> =>
      new Promise((res) => {
        execFile(
          process.execPath,
          [
            join(repoRoot, 'bin/netoken.js'),
            'inspect',
            '-r',
            file,
            '--policy',
            'guard',
            '--kubeconfig',
            kubeconfig,
            '--namespace',
            NS,
            '-o',
            'json',
          ],
          { encoding: 'utf8' },
          (err, stdout, stderr) => res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const ok = await inspect(await cluster.serviceAccountKubeconfig(NS, 'oncall'));
    assert.equal(ok.code, 0, ok.stderr);
    const verdicts = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; verdict?: string; policy?: string })
      .filter((l) => l.type === 'syn');
    assert.deepEqual(
      verdicts.map((v) => [v.policy, v.verdict]),
      [
        ['guard', 'valid'],
        ['guard', 'invalid'],
      ],
    );
    for (const enc of [GUARD_KEY.toString('hex'), GUARD_KEY.toString('base64')])
      assert.ok(!(ok.stdout + ok.stderr).includes(enc), "the key in inspect's output");

    const denied = await inspect(await cluster.serviceAccountKubeconfig(NS, 'nobody'));
    assert.equal(denied.code, 1);
    assert.match(
      denied.stderr,
      /not allowed to read TokenPolicy "guard" \(HTTP 403.*\); inspect needs get on tokenpolicies and on the policy's Secret: see examples\/inspect-rbac\.yaml/,
    );
    const missing = await new Promise<CommandResult>((res) => {
      execFile(
        process.execPath,
        [join(repoRoot, 'bin/netoken.js'), 'inspect', '-r', file, '--policy', 'nosuch', '--kubeconfig', cluster.kubeconfig],
        { encoding: 'utf8' },
        (err, stdout, stderr) => res({ code: err ? 1 : 0, stdout, stderr }),
      );
    });
    assert.match(missing.stderr, /TokenPolicy "nosuch" not found/);
  });
});
