/**
 * System tests against a real kube-apiserver: the CRDs install, a TokenPolicy round-trips
 * through kubectl, the schema and CEL rules reject bad policies with messages a person can act
 * on, and RBAC is enforced for ServiceAccount identities.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentStatus } from '../../src/agent/agent.js';
import {
  type AppliedGroup,
  type NodeStateStatus,
  groupedReport,
  nodeStateStatus,
  reportedPolicies,
} from '../../src/agent/node-state.js';
import { MAX_POLICIES_PER_NODE, NT_MAX_PORTS } from '../../src/lib/abi.js';
import { repoRoot, TestCluster } from './cluster.js';

interface Condition {
  type: string;
  status: string;
}

interface Crd {
  status?: { conditions?: Condition[] };
  spec: { versions: { name: string; additionalPrinterColumns?: { name: string }[] }[] };
}

interface PolicyJson {
  metadata: { name: string; generation: number };
  spec: {
    token: { mode: string; epochSeconds?: number; secretRef: { name: string }; rotation?: { period: string } };
    option: { kind: number; experimentId: number };
    egress?: { destinations?: { cidr: string; ports?: number[] }[] };
    ingress?: { action: string; ports?: number[]; exemptSources?: string[] };
    nodeSelector?: { matchLabels?: Record<string, string> };
  };
}

const goodPolicy = `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: edge-web}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  interfaces: {names: [eth0], patterns: ["ens*"]}
  token:
    mode: Keyed
    secretRef: {name: edge-web-token}
    epochSeconds: 60
    rotation: {period: 24h}
  egress:
    destinations:
      - cidr: 203.0.113.0/24
        ports: [443]
  ingress:
    ports: [443]
    exemptSources: [10.0.0.0/8]
`;

/** A one-line-different copy of a minimal valid policy, named `name`. */
function policy(name: string, tokenYaml: string, rest = 'egress: {}'): string {
  return `apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: ${name}}
spec:
  token: ${tokenYaml}
  ${rest}
`;
}

describe('TokenPolicy on a real API server', () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await TestCluster.start();
  });

  after(async () => {
    await cluster?.stop();
  });

  test('both CRDs are established with the printer columns users see', async () => {
    for (const [crd, columns] of [
      ['tokenpolicies.netoken.io', ['Mode', 'Ready', 'Reason', 'Nodes Ready', 'Selected', 'Without Agent', 'Age']],
      ['tokennodestates.netoken.io', ['Ready', 'Agent', 'Kernel', 'Counters Updated', 'Age']],
    ] as const) {
      const got = await cluster.getJson<Crd>(['crd', crd]);
      const established = got.status?.conditions?.find((c) => c.type === 'Established')?.status;
      assert.equal(established, 'True', `${crd} Established: got ${established}, want True`);
      const cols = got.spec.versions[0]?.additionalPrinterColumns?.map((c) => c.name);
      assert.deepEqual(cols, columns, `${crd} printer columns`);
    }
  });

  test('kubectl explain tokenpolicy.spec.token documents each field', async () => {
    const out = await cluster.kubectlOk(['explain', 'tokenpolicy.spec.token']);
    for (const want of [
      'mode',
      'epochSeconds',
      'secretRef',
      'bind',
      'rotation',
      'mode is optional; it defaults to Static',
      'epochSeconds is required for mode Keyed',
    ]) {
      assert.ok(out.includes(want), `explain output lacks ${JSON.stringify(want)}:\n${out}`);
    }
  });

  test('a valid TokenPolicy applies with kubectl and reads back with its defaults filled in', async () => {
    const applied = await cluster.apply(goodPolicy);
    assert.match(applied, /tokenpolicy\.netoken\.io\/edge-web (created|configured)/);
    const got = await cluster.getJson<PolicyJson>(['tokenpolicy', 'edge-web']);
    assert.equal(got.spec.token.mode, 'Keyed');
    assert.equal(got.spec.token.epochSeconds, 60);
    assert.equal(got.spec.token.secretRef.name, 'edge-web-token');
    assert.equal(got.spec.token.rotation?.period, '24h');
    assert.deepEqual(got.spec.nodeSelector, { matchLabels: { role: 'edge' } });
    assert.deepEqual(got.spec.egress?.destinations, [{ cidr: '203.0.113.0/24', ports: [443] }]);
    assert.equal(got.spec.option.kind, 253, 'option.kind default');
    assert.equal(got.spec.option.experimentId, 0x4e54, 'option.experimentId default');
    assert.equal(got.spec.ingress?.action, 'Monitor', 'ingress.action default');
    assert.deepEqual(got.spec.ingress?.exemptSources, ['10.0.0.0/8']);

    const table = await cluster.kubectlOk(['get', 'tokenpolicies']);
    const header = table.split('\n')[0] ?? '';
    assert.match(header, /^NAME\s+MODE\s+READY\s+REASON\s+NODES READY\s+SELECTED\s+AGE$/, `table header: ${header}`);
    assert.match(table, /edge-web\s+Keyed\s/);
    const wide = (await cluster.kubectlOk(['get', 'tokenpolicies', '-o', 'wide'])).split('\n')[0] ?? '';
    assert.match(wide, /^NAME\s+MODE\s+READY\s+REASON\s+NODES READY\s+SELECTED\s+WITHOUT AGENT\s+AGE$/, `wide header: ${wide}`);
  });

  test('a Static policy defaults mode and accepts every documented field', async () => {
    await cluster.apply(
      policy(
        'static-all',
        '{secretRef: {name: static-all-token}}',
        `option: {kind: 254, experimentId: 65535}
  interfaces: {names: [eth0, bond0.100], patterns: ["eth[0-3]"]}
  egress: {destinations: [{cidr: "2001:db8::/32", ports: [1, 65535]}]}
  ingress: {action: Enforce, exemptSources: ["192.0.2.1/32", "fd00::/8"]}`,
      ),
    );
    const got = await cluster.getJson<PolicyJson>(['tokenpolicy', 'static-all']);
    assert.equal(got.spec.token.mode, 'Static', 'token.mode default');
    assert.equal(got.spec.option.kind, 254);
    assert.equal(got.spec.ingress?.action, 'Enforce');
  });

  /** Applies yaml expecting a refusal; returns kubectl's stderr. */
  async function rejected(yaml: string): Promise<string> {
    const r = await cluster.kubectl(['apply', '-f', '-'], { input: yaml });
    assert.notEqual(r.code, 0, `apply should fail but printed: ${r.stdout}`);
    assert.match(r.stderr, /is invalid/, `stderr: ${r.stderr}`);
    return r.stderr;
  }

  test('a Keyed policy without epochSeconds is refused by a CEL rule that says what to add', async () => {
    const err = await rejected(policy('keyed-no-epoch', '{mode: Keyed, secretRef: {name: k}}'));
    assert.ok(err.includes('spec.token.epochSeconds'), `error names the field: ${err}`);
    assert.ok(err.includes('token.mode Keyed needs token.epochSeconds'), `error says what to do: ${err}`);
  });

  test('a Static policy with epochSeconds or bind is refused', async () => {
    let err = await rejected(policy('static-epoch', '{mode: Static, secretRef: {name: k}, epochSeconds: 60}'));
    assert.ok(err.includes('token.epochSeconds applies only to token.mode Keyed'), err);
    err = await rejected(policy('static-bind', '{mode: Static, secretRef: {name: k}, bind: [Sequence]}'));
    assert.ok(err.includes('token.bind applies only to token.mode Keyed'), err);
    err = await rejected(policy('static-replay', '{mode: Static, secretRef: {name: k}}', 'ingress: {replayLimit: 10}'));
    assert.ok(err.includes('ingress.replayLimit applies only to token.mode Keyed'), err);
  });

  test('clockSkewSeconds: Keyed only, at most epochSeconds; accepted within it', async () => {
    let err = await rejected(policy('static-skew', '{mode: Static, secretRef: {name: k}, clockSkewSeconds: 3}'));
    assert.ok(err.includes('token.clockSkewSeconds applies only to token.mode Keyed'), err);
    err = await rejected(
      policy('skew-past-epoch', '{mode: Keyed, secretRef: {name: k}, epochSeconds: 10, clockSkewSeconds: 11}'),
    );
    assert.ok(err.includes('spec.token.clockSkewSeconds'), `error names the field: ${err}`);
    assert.ok(err.includes('token.clockSkewSeconds must not exceed token.epochSeconds'), err);
    await cluster.apply(policy('skew-ok', '{mode: Keyed, secretRef: {name: k}, epochSeconds: 10, clockSkewSeconds: 10}'));
    const got = await cluster.getJson<{ spec: { token: { clockSkewSeconds?: number } } }>(['tokenpolicy', 'skew-ok']);
    assert.equal(got.spec.token.clockSkewSeconds, 10);
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'skew-ok']);
  });

  test('rotation: a period of exactly what a rotation takes is accepted, onStall defaults to Proceed', async () => {
    await cluster.apply(policy('rot-min', '{mode: Keyed, secretRef: {name: k}, epochSeconds: 300, rotation: {period: 7m5s}}'));
    const got = await cluster.getJson<{ spec: { token: { rotation?: { period: string; onStall?: string } } } }>([
      'tokenpolicy',
      'rot-min',
    ]);
    assert.deepEqual(got.spec.token.rotation, { period: '7m5s', onStall: 'Proceed' });
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'rot-min']);
    const err = await rejected(
      policy(
        'rot-skew',
        '{mode: Keyed, secretRef: {name: k}, epochSeconds: 300, clockSkewSeconds: 60, rotation: {period: 7m5s}}',
      ),
    );
    assert.ok(err.includes('token.rotation.period is shorter than a rotation takes'), `an explicit skew counts: ${err}`);
  });

  test('option kind 252 is refused by the schema enum', async () => {
    const err = await rejected(policy('kind-252', '{secretRef: {name: k}}', 'egress: {}\n  option: {kind: 252}'));
    assert.ok(err.includes('spec.option.kind: Unsupported value: 252'), err);
    assert.ok(err.includes('"253"') && err.includes('"254"'), `error lists the allowed kinds: ${err}`);
  });

  test('numeric limits are enforced', async () => {
    const cases: [string, string, string, RegExp][] = [
      [
        'exid',
        '{secretRef: {name: k}}',
        'egress: {}\n  option: {experimentId: 65536}',
        /spec\.option\.experimentId: Invalid value: 65536/,
      ],
      [
        'epoch',
        '{mode: Keyed, secretRef: {name: k}, epochSeconds: 86401}',
        'egress: {}',
        /spec\.token\.epochSeconds: Invalid value: 86401/,
      ],
      [
        'port0',
        '{secretRef: {name: k}}',
        'egress: {destinations: [{cidr: 10.0.0.0/8, ports: [0]}]}',
        /ports\[0\]: Invalid value: 0/,
      ],
      // The CRD's limit is the BPF map entry's (NT_MAX_PORTS).
      [
        'ports',
        '{secretRef: {name: k}}',
        `egress: {destinations: [{cidr: 10.0.0.0/8, ports: [${Array.from({ length: NT_MAX_PORTS + 1 }, (_, i) => i + 1).join(',')}]}]}`,
        new RegExp(`Too many: ${NT_MAX_PORTS + 1}: must have at most ${NT_MAX_PORTS} items`),
      ],
      [
        'rotate',
        '{secretRef: {name: k}, rotation: {period: 30s}}',
        'egress: {}',
        /token\.rotation\.period is shorter than a rotation takes: at least\s+epochSeconds \+ clockSkewSeconds \+ 2m/,
      ],
      [
        'rotkeyed',
        '{mode: Keyed, epochSeconds: 300, secretRef: {name: k}, rotation: {period: 7m4s}}',
        'egress: {}',
        /token\.rotation\.period is shorter than a rotation takes/,
      ],
      [
        'stall',
        '{secretRef: {name: k}, rotation: {period: 24h, stallTimeout: 5s}}',
        'egress: {}',
        /rotation\.stallTimeout must be at least 10s/,
      ],
      [
        'onstall',
        '{secretRef: {name: k}, rotation: {period: 24h, onStall: Never}}',
        'egress: {}',
        /spec\.token\.rotation\.onStall: Unsupported value: "Never"/,
      ],
      [
        'rotfmt',
        '{secretRef: {name: k}, rotation: {period: 1d}}',
        'egress: {}',
        /spec\.token\.rotation\.period: Invalid value: "1d"/,
      ],
      [
        'ifname',
        '{secretRef: {name: k}}',
        'egress: {}\n  interfaces: {names: [a-very-long-interface]}',
        /may not be (longer|more) than 15/,
      ],
      ['action', '{secretRef: {name: k}}', 'ingress: {action: Drop}', /spec\.ingress\.action: Unsupported value: "Drop"/],
    ];
    for (const [name, tok, rest, want] of cases) {
      const err = await rejected(policy(`limit-${name}`, tok, rest));
      assert.match(err, want, `case ${name}`);
    }
  });

  test('a policy with neither egress nor ingress is refused', async () => {
    const err = await rejected(policy('does-nothing', '{secretRef: {name: k}}', ''));
    assert.ok(err.includes('a policy needs egress (to mark outgoing SYNs), ingress (to verify incoming SYNs), or both'), err);
  });

  test('CIDRs are checked: not a CIDR, and host bits set', async () => {
    let err = await rejected(policy('bad-exempt', '{secretRef: {name: k}}', 'ingress: {exemptSources: [10.0.0.1]}'));
    assert.ok(err.includes('exemptSources entries must be CIDRs'), err);
    err = await rejected(policy('host-bits', '{secretRef: {name: k}}', 'egress: {destinations: [{cidr: 203.0.113.7/24}]}'));
    assert.ok(err.includes('cidr 203.0.113.7/24 has bits set past its prefix length; clear them'), err);
    err = await rejected(policy('exempt-bits', '{secretRef: {name: k}}', 'ingress: {exemptSources: ["10.1.2.3/8"]}'));
    assert.ok(err.includes('exemptSources entry 10.1.2.3/8 has bits set past its prefix length'), err);
  });

  test('a TokenNodeState takes the status an agent writes, up to the 1023 policies a node can apply, and prints its columns', async () => {
    await cluster.apply('apiVersion: netoken.io/v1alpha1\nkind: TokenNodeState\nmetadata: {name: node-a}\n');
    const agentStatus = (policies: number): AgentStatus =>
      ({
        updatedAt: '2026-01-01T00:00:00Z',
        programId: 42,
        ready: true,
        reconciles: 1,
        lastReconcileMs: 1,
        documentErrors: [],
        policies: Array.from({ length: policies }, (_, i) => ({
          name: `p-${String(i).padStart(4, '0')}`,
          generation: 1,
          selected: true,
          id: i + 1 <= MAX_POLICIES_PER_NODE ? i + 1 : 0,
          interfaces: i + 1 <= MAX_POLICIES_PER_NODE ? ['eth0'] : [],
          warnings: [],
          counters: { marked: '10', skipped_payload: '0' },
          errors:
            i + 1 <= MAX_POLICIES_PER_NODE
              ? []
              : [{ reason: 'TooManyPolicies', message: `at most ${MAX_POLICIES_PER_NODE} policies can apply to one node` }],
        })),
        hooks: [{ ifindex: 2, name: 'eth0', direction: 'egress', mode: 'tcx', progId: 42, policies: ['p-0000'] }],
        hookErrors: [
          { ifindex: 3, name: 'gre0', direction: 'egress', reason: 'UnsupportedDevice', message: 'gre0 is a gre device' },
        ],
        interfaces: [{ name: 'eth0', ifindex: 2, counters: { unreadable: '3' } }],
      }) as AgentStatus;
    const write = (s: unknown) =>
      cluster.kubectl([
        'patch',
        'tokennodestate',
        'node-a',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({ status: s }),
      ]);

    const one = nodeStateStatus(agentStatus(1), []);
    const r1 = await write(one);
    assert.equal(r1.code, 0, r1.stderr);
    const got = await cluster.getJson<{ status: NodeStateStatus }>(['tokennodestate', 'node-a']);
    assert.deepEqual(
      got.status.policies,
      [{ name: 'p-0000', generation: 1, interfaces: ['eth0'], counters: { marked: 10 } }],
      'zero counters are left out',
    );
    assert.deepEqual(got.status.interfaces, [
      {
        name: 'eth0',
        ifindex: 2,
        hooks: [{ direction: 'Egress', attachMode: 'tcx', programId: 42, state: 'Attached' }],
        counters: { unreadable: 3 },
      },
      { name: 'gre0', ifindex: 3, hooks: [{ direction: 'Egress', state: 'Failed', reason: 'UnsupportedDevice' }] },
    ]);
    const table = await cluster.kubectlOk(['get', 'tokennodestates']);
    assert.match(table.split('\n')[0] ?? '', /^NAME\s+READY\s+AGENT\s+KERNEL\s+COUNTERS UPDATED\s+AGE$/);
    assert.match(table, /node-a\s+True\s+0\.1\.0\s+\S+\s/);

    // At the limit: every policy a node can apply fits in its report.
    const full = nodeStateStatus(agentStatus(MAX_POLICIES_PER_NODE), []);
    assert.equal(full.policies.length, 1023);
    const r2 = await write(full);
    assert.equal(r2.code, 0, `a report of ${MAX_POLICIES_PER_NODE} policies is taken: ${r2.stderr.slice(0, 500)}`);
    // Past it: the agent lists what it applied and counts the rest, so the report is still taken.
    const over = nodeStateStatus(agentStatus(MAX_POLICIES_PER_NODE + 2), []);
    assert.equal(over.policies.length, MAX_POLICIES_PER_NODE);
    assert.equal(over.policiesOverLimit, 2);
    assert.match(
      over.conditions.find((c) => c.type === 'Degraded')?.message ?? '',
      /2 more policies select this node than the 1023 it can apply; not applied: p-1023, p-1024/,
    );
    const r3 = await write(over);
    assert.equal(r3.code, 0, r3.stderr.slice(0, 500));
    // Grouped (status.applied, as the agent writes plain policies): the same limit fits.
    const plainFull = { ...full, policies: full.policies.map(({ counters: _c, ...p }) => p) };
    const grouped = groupedReport(plainFull);
    assert.equal(grouped.applied[0]?.names.length, MAX_POLICIES_PER_NODE);
    const r5 = await write(grouped);
    assert.equal(r5.code, 0, `a grouped report of ${MAX_POLICIES_PER_NODE} policies is taken: ${r5.stderr.slice(0, 500)}`);
    const back = await cluster.getJson<{ status: NodeStateStatus & { applied?: AppliedGroup[] } }>(['tokennodestate', 'node-a']);
    assert.equal(reportedPolicies(back.status).length, MAX_POLICIES_PER_NODE, 'every policy reads back');
    // And the schema holds the same number: one entry more is refused.
    const tooMany = { ...full, policies: [...full.policies, { name: 'p-extra', generation: 1 }] };
    const r4 = await write(tooMany);
    assert.notEqual(r4.code, 0, 'a report listing 1024 policies is refused');
    assert.match(r4.stderr, /status\.policies: Too many: 1024: must have at most 1023 items/);

    const bad = { interfaces: [{ name: 'eth0', hooks: [{ direction: 'Egress', state: 'Attached', attachMode: 'bpfman' }] }] };
    const r = await write(bad);
    assert.notEqual(r.code, 0, 'an unknown attachMode must be refused');
    assert.match(r.stderr, /attachMode: Unsupported value: "bpfman"/);
  });

  test('the pinned helm reaches the cluster', async () => {
    const r = await cluster.helm(['list', '--all-namespaces']);
    assert.equal(r.code, 0, `helm list: ${r.stderr}`);
    assert.match(r.stdout, /^NAME\s+NAMESPACE\s+REVISION/);
  });

  describe('RBAC', () => {
    before(async () => {
      await cluster.apply(readFileSync(join(repoRoot, 'test/k8s/rbac-fixture.yaml'), 'utf8'));
    });

    test('a ServiceAccount with get/list/watch can read policies but is refused create', async () => {
      const kc = await cluster.serviceAccountKubeconfig('netoken-rbac-test', 'policy-reader');
      const list = await cluster.kubectlOk(['get', 'tokenpolicies', '-o', 'name'], { kubeconfig: kc });
      assert.match(list, /tokenpolicy\.netoken\.io\/edge-web/);
      const one = await cluster.kubectlOk(['get', 'tokenpolicy', 'edge-web', '-o', 'jsonpath={.spec.token.mode}'], {
        kubeconfig: kc,
      });
      assert.equal(one, 'Keyed');

      const r = await cluster.kubectl(['create', '-f', '-'], {
        kubeconfig: kc,
        input: policy('made-by-reader', '{secretRef: {name: k}}'),
      });
      assert.notEqual(r.code, 0, `create should be refused but printed: ${r.stdout}`);
      assert.match(r.stderr, /Forbidden/, r.stderr);
      assert.match(
        r.stderr,
        /User "system:serviceaccount:netoken-rbac-test:policy-reader" cannot create resource "tokenpolicies" in API group "netoken\.io"/,
        r.stderr,
      );
      const canI = await cluster.kubectl(['auth', 'can-i', 'delete', 'tokenpolicies.netoken.io'], { kubeconfig: kc });
      assert.equal(canI.stdout.trim(), 'no');
      const missing = await cluster.kubectl(['get', 'tokenpolicy', 'made-by-reader']);
      assert.match(missing.stderr, /NotFound/, 'the refused create left nothing behind');
    });

    test('a ServiceAccount with no binding cannot even list policies', async () => {
      const kc = await cluster.serviceAccountKubeconfig('netoken-rbac-test', 'nobody');
      const r = await cluster.kubectl(['get', 'tokenpolicies'], { kubeconfig: kc });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /cannot list resource "tokenpolicies" in API group "netoken\.io" at the cluster scope/, r.stderr);
    });

    test('a token for a ServiceAccount that does not exist is not minted', async () => {
      await assert.rejects(
        cluster.serviceAccountToken('netoken-rbac-test', 'no-such-account'),
        /TokenRequest for ServiceAccount netoken-rbac-test\/no-such-account failed: .*not found/,
      );
    });
  });
});
