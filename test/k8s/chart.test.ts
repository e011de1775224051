/**
 * The Helm chart and deploy/: helm lint, helm template with default and non-default values,
 * every rendered object accepted by a real kube-apiserver (server-side dry-run), deploy/ and
 * the chart's CRDs current, the exact RBAC each component gets, and the admission policy that
 * confines an agent to its own node's TokenNodeState.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, toolPaths, toolVersions, TestCluster, type CommandResult } from './cluster.js';
import {
  AGENT_SA,
  OPERATOR_SA,
  agentKubeconfig,
  chartDir,
  ensureNamespace,
  helm,
  lint,
  parseObjects,
  render,
  toYamlStream,
  waitAdmissionPolicy,
  type K8sObject,
} from './chart.js';

const NS = 'netoken-system';
const CUSTOM_NS = 'netoken-custom';
const KUBE_VERSION = toolVersions().KUBERNETES_VERSION;

/** Everything a cluster admin might change at once, to prove the templates handle it. */
const NON_DEFAULT_VALUES = `
image: {repository: registry.example.com/net/netoken, tag: "0.1.0-rc.1", pullPolicy: Always}
imagePullSecrets: [{name: registry-credentials}]
logLevel: debug
operator:
  replicas: 2
  leaderElection: {enabled: true}
  metricsPort: 9191
  priorityClassName: system-cluster-critical
  podAnnotations: {example.com/team: network}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app.kubernetes.io/component: operator}}
  extraArgs: ["--log-level=debug"]
agent:
  privileged: true
  metricsPort: 9190
  bpfRoot: /run/bpf
  runDir: /var/run/netoken-state
  counterInterval: 2m
  maxUnavailable: 25%
  priorityClassName: system-node-critical
  podAnnotations: {example.com/team: network}
  resources: {requests: {cpu: 100m, memory: 200Mi}, limits: {cpu: "1", memory: 512Mi}}
  extraArgs: ["--attach=tc", "--tc-priority=7"]
admissionPolicy: {enabled: true}
metrics:
  agentJob: netoken-node
  serviceMonitor: {enabled: true, interval: 1m, scrapeTimeout: 20s, labels: {release: kube-prometheus-stack}}
  prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}, agentDownFor: 10m, policyNotReadyFor: 1h, invalidTokensPerSecond: 2}
  dashboard: {enabled: true, labels: {grafana_dashboard: "1", team: network}, annotations: {grafana_folder: Network}, namespace: monitoring}
`;

/**
 * A CustomResourceDefinition of monitoring.coreos.com/v1 that declares only the spec fields the
 * chart uses, with the upstream types: the real CRDs (prometheus-operator) are thousands of
 * lines and this test downloads nothing. kubectl's strict field validation refuses any field not
 * declared, so a typo in the chart fails the dry-run just as it would against the real CRD.
 * `spec` is the YAML of the spec schema, indented to sit under `spec:` (14 spaces).
 */
function monitoringCrd(kind: string, plural: string, spec: string): string {
  return `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ${plural}.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ${kind}, listKind: ${kind}List, plural: ${plural}, singular: ${kind.toLowerCase()}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
${spec}`;
}

const DURATION = `'^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'`;

const SERVICE_MONITOR_CRD = monitoringCrd(
  'ServiceMonitor',
  'servicemonitors',
  `              type: object
              required: [selector]
              properties:
                jobLabel: {type: string}
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: ${DURATION}}
                      scrapeTimeout: {type: string, pattern: ${DURATION}}
                      relabelings:
                        type: array
                        items:
                          type: object
                          properties:
                            action: {type: string, enum: [replace, Replace, keep, Keep, drop, Drop, hashmod, HashMod, labelmap, LabelMap, labeldrop, LabelDrop, labelkeep, LabelKeep, lowercase, Lowercase, uppercase, Uppercase, keepequal, KeepEqual, dropequal, DropEqual]}
                            sourceLabels: {type: array, items: {type: string}}
                            targetLabel: {type: string}
                            replacement: {type: string}
                            regex: {type: string}
                            separator: {type: string}
`,
);

const PROMETHEUS_RULE_CRD = monitoringCrd(
  'PrometheusRule',
  'prometheusrules',
  `              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name]
                    properties:
                      name: {type: string, minLength: 1}
                      interval: {type: string, pattern: ${DURATION}}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {x-kubernetes-int-or-string: true}
                            for: {type: string, pattern: ${DURATION}}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
`,
);

interface Container {
  name: string;
  image: string;
  args: string[];
  env: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports: { name: string; containerPort: number }[];
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
  livenessProbe?: { httpGet?: { path: string; port: string } };
  readinessProbe?: { httpGet?: { path: string; port: string } };
  volumeMounts: { name: string; mountPath: string; mountPropagation?: string }[];
  securityContext: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsUser?: number;
    runAsNonRoot?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
    appArmorProfile?: { type: string };
  };
}

interface PodSpec {
  serviceAccountName: string;
  hostNetwork?: boolean;
  dnsPolicy?: string;
  priorityClassName?: string;
  imagePullSecrets?: { name: string }[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number };
  containers: Container[];
  volumes: { name: string; hostPath?: { path: string; type: string }; emptyDir?: object }[];
  tolerations?: { operator?: string; key?: string }[];
  nodeSelector?: Record<string, string>;
  affinity?: object;
}

interface Workload extends K8sObject {
  spec: {
    replicas?: number;
    updateStrategy?: { rollingUpdate?: { maxUnavailable: number | string } };
    template: { metadata: { annotations?: Record<string, string> }; spec: PodSpec };
  };
}

/** kubectl arguments that merge `patch` (JSON) into the status of `kind`/`name`. */
function statusPatch(kind: string, name: string, patch: string): string[] {
  return ['patch', kind, name, '--subresource=status', '--type=merge', '-p', patch];
}

function find<T extends K8sObject = K8sObject>(objects: K8sObject[], kind: string, name: string): T {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `rendered objects include ${kind} ${name}; got ${objects.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o as T;
}

function container(w: Workload): Container {
  const c = w.spec.template.spec.containers[0];
  assert.ok(c, `${w.kind} ${w.metadata.name} has a container`);
  return c;
}

/** The comment lines right above a line, in the text of a rendered or source file. */
function commentAbove(lines: string[], i: number): string {
  const out: string[] = [];
  for (let j = i - 1; j >= 0 && /^\s*#/.test(lines[j] as string); j--) out.unshift((lines[j] as string).trim());
  return out.join(' ');
}

describe('Helm chart: lint and templates', () => {
  let defaults: K8sObject[];
  let defaultYaml: string;

  before(async () => {
    assert.ok(
      existsSync(toolPaths().helm),
      `helm is missing at ${toolPaths().helm}; build it with: bash test/k8s/build-tools.sh helm`,
    );
    defaultYaml = await render({ namespace: NS });
    defaults = parseObjects(defaultYaml);
  });

  test('helm lint --strict passes with the default and the non-default values', async () => {
    const plain = await lint();
    assert.equal(plain.code, 0, `helm lint (defaults): ${plain.stdout}${plain.stderr}`);
    assert.match(plain.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    const custom = await lint({ namespace: CUSTOM_NS, values: NON_DEFAULT_VALUES });
    assert.equal(custom.code, 0, `helm lint (non-default values): ${custom.stdout}${custom.stderr}`);
    assert.match(custom.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  test('the default render: these objects, namespaced ones in the release namespace', () => {
    const got = defaults.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    const want = [
      'ClusterRole/netoken-agent',
      'ClusterRole/netoken-operator',
      'ClusterRoleBinding/netoken-agent',
      'ClusterRoleBinding/netoken-operator',
      'DaemonSet/netoken-agent',
      'Deployment/netoken-operator',
      'Role/netoken-agent',
      'Role/netoken-operator',
      'RoleBinding/netoken-agent',
      'RoleBinding/netoken-operator',
      'Service/netoken-agent-metrics',
      'Service/netoken-operator-metrics',
      'ServiceAccount/netoken-agent',
      'ServiceAccount/netoken-operator',
      'ValidatingAdmissionPolicy/netoken-agent-own-node-state',
      'ValidatingAdmissionPolicyBinding/netoken-agent-own-node-state',
    ].sort();
    assert.deepEqual(got, want);
    const clusterScoped = new Set([
      'ClusterRole',
      'ClusterRoleBinding',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
    for (const o of defaults) {
      assert.equal(o.metadata.namespace, clusterScoped.has(o.kind) ? undefined : NS, `namespace of ${o.kind} ${o.metadata.name}`);
      assert.equal(o.metadata.labels?.['app.kubernetes.io/name'], 'netoken', `${o.kind} ${o.metadata.name} is labelled`);
    }
  });

  test('the agent DaemonSet: every node, host network, bpffs, node name, three capabilities, read-only root', () => {
    const ds = find<Workload>(defaults, 'DaemonSet', 'netoken-agent');
    const pod = ds.spec.template.spec;
    const c = container(ds);
    assert.equal(pod.serviceAccountName, AGENT_SA);
    assert.equal(pod.hostNetwork, true, 'hostNetwork: the hooks go on the node interfaces');
    assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
    assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint, so every node runs an agent');
    assert.equal(c.image, 'netoken:0.1.0', 'image tag defaults to appVersion');
    assert.deepEqual(c.args.slice(0, 1), ['agent']);
    assert.ok(!c.args.some((a) => a.startsWith('--policy-file')), 'cluster mode: no --policy-file');
    for (const a of [
      '--node-name=$(NODE_NAME)',
      '--namespace=$(POD_NAMESPACE)',
      '--state-dir=/sys/fs/bpf/netoken',
      '--run-dir=/run/netoken',
      '--metrics-address=:9090',
      '--counter-interval=5m',
      '--log-format=json',
      '--log-level=info',
    ]) {
      assert.ok(c.args.includes(a), `agent args include ${a}; got ${c.args.join(' ')}`);
    }
    assert.equal(
      c.env.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath,
      'spec.nodeName',
      'NODE_NAME from the downward API',
    );
    assert.equal(c.env.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath, 'metadata.namespace');

    const sc = c.securityContext;
    assert.equal(sc.privileged, false, 'not privileged by default');
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.runAsUser, 0, 'root: added capabilities only reach uid 0');
    assert.deepEqual(sc.capabilities, { drop: ['ALL'], add: ['BPF', 'NET_ADMIN', 'PERFMON'] });
    assert.equal(sc.seccompProfile?.type, 'RuntimeDefault');
    assert.equal(sc.appArmorProfile?.type, 'Unconfined');

    // Each capability carries a comment saying why, in the rendered manifest itself.
    const lines = defaultYaml.split('\n');
    for (const cap of ['BPF', 'NET_ADMIN', 'PERFMON']) {
      const i = lines.findIndex((l) => l.trim() === `- ${cap}`);
      assert.ok(i > 0, `capability ${cap} is listed`);
      assert.match(commentAbove(lines, i), new RegExp(`^# ${cap}: \\S+`), `capability ${cap} has a comment saying why`);
    }

    const bpffs = pod.volumes.find((v) => v.name === 'bpffs');
    assert.deepEqual(
      bpffs?.hostPath,
      { path: '/sys/fs/bpf', type: 'DirectoryOrCreate' },
      'the host bpffs, so pins survive restarts',
    );
    assert.deepEqual(
      c.volumeMounts.find((m) => m.name === 'bpffs'),
      { name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'HostToContainer' },
    );
    assert.deepEqual(pod.volumes.find((v) => v.name === 'run')?.hostPath, { path: '/run/netoken', type: 'DirectoryOrCreate' });
    assert.ok(
      c.volumeMounts.some((m) => m.mountPath === '/tmp'),
      'a writable /tmp beside the read-only root',
    );

    assert.ok(
      c.resources.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory,
      `resources set: ${JSON.stringify(c.resources)}`,
    );
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' });
    assert.deepEqual(c.ports, [{ name: 'metrics', containerPort: 9090, protocol: 'TCP' }]);
  });

  test('the operator Deployment: non-root 65532, leader election, probes, read-only root', () => {
    const d = find<Workload>(defaults, 'Deployment', 'netoken-operator');
    const pod = d.spec.template.spec;
    const c = container(d);
    assert.equal(d.spec.replicas, 1);
    assert.equal(pod.serviceAccountName, OPERATOR_SA);
    assert.deepEqual(pod.securityContext, {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    assert.deepEqual(c.securityContext, {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    assert.deepEqual(c.args, [
      'operator',
      '--namespace=$(POD_NAMESPACE)',
      '--metrics-address=:9091',
      '--leader-elect',
      '--log-level=info',
      '--log-format=json',
    ]);
    assert.deepEqual(
      c.env.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]),
      [
        ['POD_NAMESPACE', 'metadata.namespace'],
        ['POD_NAME', 'metadata.name'],
      ],
    );
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' });
    assert.ok(c.resources.requests?.memory && c.resources.limits?.memory);
  });

  test('non-default values: privileged agent, ServiceMonitors, alerts, dashboard, two operators, another namespace', async () => {
    const objects = parseObjects(await render({ namespace: CUSTOM_NS, values: NON_DEFAULT_VALUES }));
    for (const o of objects) {
      if (o.metadata.namespace !== undefined && o.kind !== 'ConfigMap')
        assert.equal(o.metadata.namespace, CUSTOM_NS, `${o.kind} ${o.metadata.name} in ${CUSTOM_NS}`);
    }
    const ds = find<Workload>(objects, 'DaemonSet', 'netoken-agent');
    const agent = container(ds);
    assert.equal(agent.securityContext.privileged, true);
    assert.equal(agent.securityContext.capabilities, undefined, 'privileged has every capability');
    assert.equal(agent.securityContext.allowPrivilegeEscalation, undefined, 'privileged containers cannot forbid escalation');
    assert.equal(agent.image, 'registry.example.com/net/netoken:0.1.0-rc.1');
    assert.deepEqual(ds.spec.template.spec.imagePullSecrets, [{ name: 'registry-credentials' }]);
    assert.equal(ds.spec.template.spec.priorityClassName, 'system-node-critical');
    assert.equal(ds.spec.updateStrategy?.rollingUpdate?.maxUnavailable, '25%');
    assert.deepEqual(ds.spec.template.spec.volumes.find((v) => v.name === 'bpffs')?.hostPath, {
      path: '/run/bpf',
      type: 'DirectoryOrCreate',
    });
    assert.equal(
      agent.volumeMounts.find((m) => m.name === 'bpffs')?.mountPropagation,
      'Bidirectional',
      'a privileged agent propagates a bpffs it mounts to the host',
    );
    for (const a of [
      '--state-dir=/run/bpf/netoken',
      '--run-dir=/var/run/netoken-state',
      '--metrics-address=:9190',
      '--counter-interval=2m',
      '--log-level=debug',
      '--attach=tc',
      '--tc-priority=7',
    ]) {
      assert.ok(agent.args.includes(a), `agent args include ${a}; got ${agent.args.join(' ')}`);
    }
    const d = find<Workload>(objects, 'Deployment', 'netoken-operator');
    assert.equal(d.spec.replicas, 2);
    assert.ok(container(d).args.includes('--leader-elect'));
    assert.ok(container(d).args.includes('--metrics-address=:9191'));
    assert.equal(d.spec.template.metadata.annotations?.['example.com/team'], 'network');
    assert.ok(d.spec.template.spec.affinity, 'affinity passed through');

    const vap = find<K8sObject & { spec: { matchConditions: { expression: string }[] } }>(
      objects,
      'ValidatingAdmissionPolicy',
      'netoken-agent-own-node-state',
    );
    assert.match(
      vap.spec.matchConditions[0]?.expression ?? '',
      new RegExp(`system:serviceaccount:${CUSTOM_NS}:netoken-agent`),
      'the policy names the agent of this namespace',
    );
    const binding = find<K8sObject & { subjects: { namespace: string }[] }>(objects, 'ClusterRoleBinding', 'netoken-agent');
    assert.equal(binding.subjects[0]?.namespace, CUSTOM_NS);

    const monitors = objects.filter((o) => o.kind === 'ServiceMonitor') as (K8sObject & {
      spec: { endpoints: { relabelings: { targetLabel: string; replacement: string }[] }[] };
    })[];
    assert.deepEqual(monitors.map((m) => m.metadata.name).sort(), ['netoken-agent', 'netoken-operator']);
    for (const m of monitors) assert.equal(m.metadata.labels?.release, 'kube-prometheus-stack');
    const jobOf = (name: string): string | undefined =>
      monitors.find((m) => m.metadata.name === name)?.spec.endpoints[0]?.relabelings.find((r) => r.targetLabel === 'job')
        ?.replacement;
    assert.equal(jobOf('netoken-agent'), 'netoken-node', "the agents' job label is metrics.agentJob");
    assert.equal(jobOf('netoken-operator'), 'netoken-operator');

    const rule = find<K8sObject & { spec: { groups: { rules: { alert: string; expr: string; for: string }[] }[] } }>(
      objects,
      'PrometheusRule',
      'netoken',
    );
    assert.equal(rule.metadata.labels?.release, 'kube-prometheus-stack');
    const alert = (name: string): { expr: string; for: string } | undefined =>
      rule.spec.groups[0]?.rules.find((r) => r.alert === name);
    assert.equal(
      alert('NetokenAgentDown')?.expr,
      'up{job="netoken-node"} == 0',
      'the alerts select the job the ServiceMonitor sets',
    );
    assert.equal(alert('NetokenAgentDown')?.for, '10m');
    assert.equal(alert('NetokenPolicyNotReady')?.for, '1h');
    assert.match(alert('NetokenEnforceRefusingTokens')?.expr ?? '', /> 2\s/);
    const dashboard = find<K8sObject & { data: Record<string, string> }>(objects, 'ConfigMap', 'netoken-dashboard');
    assert.equal(dashboard.metadata.namespace, 'monitoring', 'the dashboard goes where the sidecar looks');
    assert.equal(dashboard.metadata.labels?.grafana_dashboard, '1');
    assert.equal(dashboard.metadata.labels?.team, 'network');
    assert.equal(dashboard.metadata.annotations?.grafana_folder, 'Network');
    assert.equal((JSON.parse(dashboard.data['netoken.json'] as string) as { uid: string }).uid, 'netoken-overview');

    const noPolicy = parseObjects(
      await render({ set: ['admissionPolicy.enabled=false', 'operator.leaderElection.enabled=false'] }),
    );
    assert.equal(
      noPolicy.filter((o) => o.kind.startsWith('ValidatingAdmissionPolicy')).length,
      0,
      'admissionPolicy.enabled=false drops the policy',
    );
    assert.ok(!container(find<Workload>(noPolicy, 'Deployment', 'netoken-operator')).args.includes('--leader-elect'));
  });

  test('values the chart refuses, with a message that names the value', async () => {
    const cases: [string[], RegExp][] = [
      [['--set', 'bogus=1'], /additional properties 'bogus' not allowed|bogus/],
      [['--set', 'agent.privilegd=true'], /privilegd/],
      [['--set', 'metrics.serviceMonitor.intervall=1m'], /intervall/],
      [['--set', 'metrics.prometheusRule.agentDownFor=soon'], /agentDownFor/],
      [['--set', 'metrics.prometheusRule.invalidTokensPerSecond=-1'], /invalidTokensPerSecond/],
      [['--set', 'metrics.dashboard.lables.a=b'], /lables/],
      [['--set', 'metrics.agentJob='], /agentJob/],
      [['--set', 'image.pullPolicy=Sometimes'], /pullPolicy/],
      [['--set', 'agent.privileged=yes'], /privileged/],
      [['--set', 'agent.seccompProfile=Localhost'], /seccompProfile/],
      [['--set', 'agent.counterInterval=soon'], /counterInterval/],
      [['--set', 'agent.metricsPort=70000'], /metricsPort/],
      [['--set', 'operator.replicas=2', '--set', 'operator.leaderElection.enabled=false'], /two operators would act at once/],
    ];
    for (const [args, want] of cases) {
      const r = await helm(['template', 'netoken', chartDir, '--kube-version', KUBE_VERSION, ...args]);
      assert.notEqual(r.code, 0, `helm template ${args.join(' ')} is refused; it rendered`);
      assert.match(r.stderr, want, `helm template ${args.join(' ')}: message`);
    }
  });

  test('every value is documented in values.yaml and the schema knows exactly those values', () => {
    const text = readFileSync(join(chartDir, 'values.yaml'), 'utf8');
    const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Schema;
    const lines = text.split('\n');
    const stack: { indent: number; path: string }[] = [];
    const documented: string[] = [];
    const undocumented: string[] = [];
    lines.forEach((line, i) => {
      const m = /^(\s*)([A-Za-z][\w.-]*):/.exec(line);
      if (!m) return;
      const indent = (m[1] as string).length;
      while (stack.length && (stack[stack.length - 1] as { indent: number }).indent >= indent) stack.pop();
      const path = [...stack.map((s) => s.path), m[2] as string].join('.');
      stack.push({ indent, path: m[2] as string });
      // Keys inside free-form maps and Kubernetes types are data, not chart values.
      if (!isChartValue(schema, path.split('.'))) return;
      (commentAbove(lines, i) ? documented : undocumented).push(path);
    });
    assert.deepEqual(undocumented, [], 'values without a comment right above them');
    const schemaPaths = valuePaths(schema).sort();
    assert.deepEqual([...documented].sort(), schemaPaths, 'values.yaml and values.schema.json declare the same values');
  });

  test('the schema refuses unknown keys everywhere (additionalProperties: false)', () => {
    const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Schema;
    const open: string[] = [];
    const walk = (s: Schema, path: string): void => {
      if (s.properties) {
        if (s.additionalProperties !== false) open.push(path || '(root)');
        for (const [k, v] of Object.entries(s.properties)) walk(v, path ? `${path}.${k}` : k);
      } else if (s.type === 'object' && typeof s.additionalProperties !== 'object' && !isKubernetesType(s)) {
        open.push(path);
      }
      if (s.items) walk(s.items, `${path}[]`);
    };
    walk(schema, '');
    assert.deepEqual(open, [], 'objects that accept any key');
  });

  test("the chart's CRDs are the files in crds/, and deploy/ is what the chart renders", async () => {
    const top = readdirSync(join(repoRoot, 'crds'))
      .filter((f) => f.endsWith('.yaml'))
      .sort();
    assert.deepEqual(readdirSync(join(chartDir, 'crds')).sort(), top, 'the same CRD files');
    for (const f of top) {
      assert.ok(
        readFileSync(join(chartDir, 'crds', f)).equals(readFileSync(join(repoRoot, 'crds', f))),
        `charts/netoken/crds/${f} equals crds/${f}; run: bash scripts/render-deploy.sh`,
      );
    }
    const r = await new Promise<CommandResult>((res) => {
      execFile(
        'bash',
        [join(repoRoot, 'scripts/render-deploy.sh'), '--check'],
        { env: { ...process.env, NETOKEN_HELM: toolPaths().helm }, encoding: 'utf8' },
        (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(
      r.code,
      0,
      `deploy/ drifted from the chart; run: bash scripts/render-deploy.sh\n${r.stdout.slice(0, 6000)}${r.stderr}`,
    );
    const deployed = parseObjects(readFileSync(join(repoRoot, 'deploy/netoken.yaml'), 'utf8'));
    assert.equal(deployed[0]?.kind, 'Namespace', 'deploy/ creates its namespace first');
    assert.equal(
      deployed[0]?.metadata.labels?.['pod-security.kubernetes.io/enforce'],
      'privileged',
      'the agent needs a privileged Pod Security level',
    );
    assert.deepEqual(
      deployed
        .filter((o) => o.kind === 'CustomResourceDefinition')
        .map((o) => o.metadata.name)
        .sort(),
      ['tokennodestates.netoken.io', 'tokenpolicies.netoken.io'],
    );
  });
});

interface Schema {
  type?: string | string[];
  $comment?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
}

const isKubernetesType = (s: Schema): boolean => /Kubernetes API type/.test(s.$comment ?? '');

/** A key declared by the chart (or unknown to it), as opposed to data in a map or a Kubernetes type. */
function isChartValue(schema: Schema, path: string[]): boolean {
  let s: Schema | undefined = schema;
  for (const k of path.slice(0, -1)) {
    s = s?.properties?.[k];
    if (!s || isKubernetesType(s)) return false;
  }
  return s?.properties !== undefined;
}

/** Dotted paths of every declared property (not inside free-form maps or Kubernetes types). */
function valuePaths(schema: Schema, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(schema.properties ?? {})) {
    const p = prefix ? `${prefix}.${k}` : k;
    out.push(p);
    if (v.properties && !isKubernetesType(v)) out.push(...valuePaths(v, p));
  }
  return out;
}

/** One row of an RBAC expectation: a resource, where, and exactly the verbs allowed there. */
interface Access {
  resource: string;
  subresource?: string;
  /** a namespace, 'cluster' for cluster-scoped resources, '*' for every namespace at once */
  where: string;
  allowed: string[];
}

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];

describe('Helm chart on a real API server', () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await TestCluster.start();
    for (const ns of [NS, CUSTOM_NS]) await ensureNamespace(cluster, ns);
    await cluster.apply(`${SERVICE_MONITOR_CRD}---\n${PROMETHEUS_RULE_CRD}`);
    await ensureNamespace(cluster, 'monitoring');
    await cluster.kubectlOk([
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      'crd/servicemonitors.monitoring.coreos.com',
      'crd/prometheusrules.monitoring.coreos.com',
    ]);
  });

  after(async () => {
    await cluster?.stop();
  });

  /** kubectl apply --dry-run=server; asserts that every object was accepted. */
  const dryRun = async (objects: K8sObject[], what: string): Promise<void> => {
    const r = await cluster.kubectl(['apply', '--dry-run=server', '-o', 'name', '-f', '-'], { input: toYamlStream(objects) });
    assert.equal(r.code, 0, `${what}: the API server refused objects:\n${r.stderr}`);
    const accepted = r.stdout.split('\n').filter((l) => l.trim() !== '');
    assert.equal(
      accepted.length,
      objects.length,
      `${what}: accepted ${accepted.length} of ${objects.length} objects:\n${accepted.join('\n')}`,
    );
  };

  test('every object of the default render is accepted (server-side dry-run)', async () => {
    await dryRun(parseObjects(await render({ namespace: NS, includeCrds: true })), 'default values');
  });

  test('every object of the non-default render is accepted, the ServiceMonitors, alerts and dashboard included', async () => {
    const objects = parseObjects(await render({ namespace: CUSTOM_NS, values: NON_DEFAULT_VALUES }));
    assert.equal(objects.filter((o) => o.kind === 'ServiceMonitor').length, 2);
    assert.equal(objects.filter((o) => o.kind === 'PrometheusRule' || o.kind === 'ConfigMap').length, 2);
    await dryRun(objects, 'non-default values');
  });

  test('kubectl apply --dry-run=server -f deploy/ is accepted', async () => {
    const r = await cluster.kubectl(['apply', '--dry-run=server', '-o', 'name', '-f', join(repoRoot, 'deploy')]);
    assert.equal(r.code, 0, `kubectl apply -f deploy/ refused:\n${r.stderr}`);
    const want = parseObjects(readFileSync(join(repoRoot, 'deploy/netoken.yaml'), 'utf8')).length;
    assert.equal(r.stdout.split('\n').filter((l) => l.trim()).length, want, `all ${want} objects of deploy/ accepted`);
  });

  test('helm install succeeds and prints next steps', async () => {
    const r = await cluster.helm(['install', 'netoken', chartDir, '--namespace', NS], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `helm install: ${r.stderr}`);
    assert.match(r.stdout, /STATUS: deployed/);
    for (const want of [
      /kubectl -n netoken-system get deployment,daemonset/,
      /kubectl get tokenpolicies/,
      /kubectl get tokennodestates/,
      /netoken publishes no image/,
    ]) {
      assert.match(r.stdout, want, 'NOTES.txt');
    }
    const sas = await cluster.kubectlOk(['get', 'serviceaccounts', '-n', NS, '-o', 'name']);
    assert.match(sas, /serviceaccount\/netoken-agent/);
    assert.match(sas, /serviceaccount\/netoken-operator/);
    await waitAdmissionPolicy(cluster, NS);
  });

  /** Asks `kubectl auth can-i` every verb on every row as the account; returns the mismatches. */
  const checkAccess = async (account: string, rows: Access[]): Promise<string[]> => {
    const jobs: { row: Access; verb: string }[] = rows.flatMap((row) => VERBS.map((verb) => ({ row, verb })));
    const wrong: string[] = [];
    const ask = async ({ row, verb }: { row: Access; verb: string }): Promise<void> => {
      const args = ['auth', 'can-i', verb, row.resource, `--as=${account}`];
      if (row.subresource) args.push(`--subresource=${row.subresource}`);
      if (row.where === '*') args.push('--all-namespaces');
      else if (row.where !== 'cluster') args.push('-n', row.where);
      const r = await cluster.kubectl(args);
      const got = r.stdout.trim().startsWith('yes');
      if (r.code !== 0 && !r.stdout.trim().startsWith('no')) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
      const want = row.allowed.includes(verb);
      if (got !== want) {
        const what =
          `${row.resource}${row.subresource ? `/${row.subresource}` : ''} ${row.where === 'cluster' ? '' : `in ${row.where}`}`.trim();
        wrong.push(`${verb} ${what}: got ${got ? 'yes' : 'no'}, want ${want ? 'yes' : 'no'}`);
      }
    };
    for (let i = 0; i < jobs.length; i += 8) await Promise.all(jobs.slice(i, i + 8).map(ask));
    return wrong;
  };

  test('the agent gets exactly: policies and nodes read, key Secrets of its namespace read, TokenNodeStates written', async () => {
    const wrong = await checkAccess(`system:serviceaccount:${NS}:${AGENT_SA}`, [
      { resource: 'tokenpolicies.netoken.io', where: 'cluster', allowed: ['get', 'list', 'watch'] },
      { resource: 'tokenpolicies.netoken.io', subresource: 'status', where: 'cluster', allowed: [] },
      { resource: 'tokennodestates.netoken.io', where: 'cluster', allowed: ['create', 'get', 'update', 'patch'] },
      {
        resource: 'tokennodestates.netoken.io',
        subresource: 'status',
        where: 'cluster',
        allowed: ['create', 'get', 'update', 'patch'],
      },
      { resource: 'nodes', where: 'cluster', allowed: ['get', 'list', 'watch'] },
      { resource: 'nodes', subresource: 'status', where: 'cluster', allowed: [] },
      { resource: 'secrets', where: NS, allowed: ['get', 'list', 'watch'] },
      { resource: 'secrets', where: 'kube-system', allowed: [] },
      { resource: 'secrets', where: '*', allowed: [] },
      { resource: 'leases.coordination.k8s.io', where: NS, allowed: [] },
      { resource: 'events', where: 'default', allowed: [] },
      { resource: 'pods', where: NS, allowed: [] },
      { resource: 'configmaps', where: NS, allowed: [] },
      { resource: 'customresourcedefinitions.apiextensions.k8s.io', where: 'cluster', allowed: [] },
      { resource: 'validatingadmissionpolicies.admissionregistration.k8s.io', where: 'cluster', allowed: [] },
    ]);
    assert.deepEqual(wrong, [], 'agent permissions that differ from the chart contract');
  });

  test('the operator gets exactly: policies and their status, node states read and delete, Secrets and its Lease, events', async () => {
    const wrong = await checkAccess(`system:serviceaccount:${NS}:${OPERATOR_SA}`, [
      { resource: 'tokenpolicies.netoken.io', where: 'cluster', allowed: ['get', 'list', 'watch', 'update', 'patch'] },
      { resource: 'tokenpolicies.netoken.io', subresource: 'status', where: 'cluster', allowed: ['get', 'update', 'patch'] },
      { resource: 'tokenpolicies.netoken.io', subresource: 'finalizers', where: 'cluster', allowed: ['update'] },
      { resource: 'tokennodestates.netoken.io', where: 'cluster', allowed: ['get', 'list', 'watch', 'delete'] },
      { resource: 'tokennodestates.netoken.io', subresource: 'status', where: 'cluster', allowed: [] },
      { resource: 'nodes', where: 'cluster', allowed: ['get', 'list', 'watch'] },
      { resource: 'secrets', where: NS, allowed: ['create', 'get', 'list', 'watch', 'update', 'patch'] },
      { resource: 'secrets', where: 'kube-system', allowed: [] },
      { resource: 'secrets', where: '*', allowed: [] },
      { resource: 'leases.coordination.k8s.io', where: NS, allowed: ['get', 'create', 'update'] },
      { resource: 'leases.coordination.k8s.io', where: 'kube-system', allowed: [] },
      { resource: 'events', where: 'default', allowed: ['create', 'patch'] },
      { resource: 'events.events.k8s.io', where: 'default', allowed: ['create', 'patch'] },
      { resource: 'pods', where: NS, allowed: [] },
      { resource: 'configmaps', where: NS, allowed: [] },
      { resource: 'customresourcedefinitions.apiextensions.k8s.io', where: 'cluster', allowed: [] },
    ]);
    assert.deepEqual(wrong, [], 'operator permissions that differ from the chart contract');
  });

  test("the admission policy lets an agent write its own node's TokenNodeState and refuses another node's", async () => {
    await cluster.apply('apiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n');
    const agentA = await agentKubeconfig(cluster, 'node-a', NS);
    const nodeA = await cluster.getJson<{ metadata: { uid: string } }>(['node', 'node-a']);
    const nodeB = await cluster.getJson<{ metadata: { uid: string } }>(['node', 'node-b']);
    const who = await cluster.kubectlOk(['auth', 'whoami', '-o', 'json'], { kubeconfig: agentA });
    assert.match(who, /"authentication\.kubernetes\.io\/node-name":\s*\[\s*"node-a"\s*\]/, 'the Pod-bound token names the node');

    const state = (name: string, owner: { name: string; uid: string }): string =>
      JSON.stringify({
        apiVersion: 'netoken.io/v1alpha1',
        kind: 'TokenNodeState',
        metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: owner.name, uid: owner.uid }] },
      });
    const asAgent = (args: string[], input?: string): Promise<CommandResult> =>
      cluster.kubectl(args, { kubeconfig: agentA, input });

    // Another node's state: refused, with the policy's message.
    let r = await asAgent(['create', '-f', '-'], state('node-b', { name: 'node-b', uid: nodeB.metadata.uid }));
    assert.notEqual(r.code, 0, 'agent of node-a creating TokenNodeState node-b is refused');
    assert.match(r.stderr, /netoken-agent-own-node-state/);
    assert.match(r.stderr, /the netoken agent on node "node-a" may write only TokenNodeState "node-a", not "node-b"/);

    // Its own state, owned by another Node: refused.
    r = await asAgent(['create', '-f', '-'], state('node-a', { name: 'node-b', uid: nodeB.metadata.uid }));
    assert.notEqual(r.code, 0, 'an owner reference to another Node is refused');
    assert.match(r.stderr, /may be owned only by the Node it is named after/);

    // Its own state: created, and its status written with a merge patch, as the agent does.
    r = await asAgent(['create', '-f', '-'], state('node-a', { name: 'node-a', uid: nodeA.metadata.uid }));
    assert.equal(r.code, 0, `agent of node-a creating TokenNodeState node-a: ${r.stderr}`);
    r = await asAgent(
      statusPatch('tokennodestate', 'node-a', '{"status":{"agent":{"version":"0.1.0","kernelRelease":"6.1.0","tcx":true}}}'),
    );
    assert.equal(r.code, 0, `agent of node-a patching its own status: ${r.stderr}`);

    // Another node's existing state: its status cannot be overwritten either.
    await cluster.apply(state('node-b', { name: 'node-b', uid: nodeB.metadata.uid }));
    r = await asAgent(statusPatch('tokennodestate', 'node-b', '{"status":{"agent":{"version":"forged"}}}'));
    assert.notEqual(r.code, 0, 'agent of node-a patching node-b status is refused');
    assert.match(r.stderr, /may write only TokenNodeState "node-a", not "node-b"/);
    r = await asAgent(['label', 'tokennodestate', 'node-b', 'forged=yes']);
    assert.notEqual(r.code, 0, 'agent of node-a updating node-b metadata is refused');

    // A token that is not bound to a Pod names no node: every write refused.
    const unbound = await cluster.serviceAccountKubeconfig(NS, AGENT_SA);
    r = await cluster.kubectl(statusPatch('tokennodestate', 'node-a', '{"status":{"agent":{"version":"x"}}}'), {
      kubeconfig: unbound,
    });
    assert.notEqual(r.code, 0, 'an agent token without a node is refused');
    assert.match(r.stderr, /must use a token bound to its Pod/);

    // The policy confines the agent only: the operator still removes a vanished node's state.
    const operator = await cluster.serviceAccountKubeconfig(NS, OPERATOR_SA);
    r = await cluster.kubectl(['delete', 'tokennodestate', 'node-b'], { kubeconfig: operator });
    assert.equal(r.code, 0, `operator deleting TokenNodeState node-b: ${r.stderr}`);
    const left = await cluster.getJson<{ metadata: { name: string }; status?: { agent?: { version?: string } } }>([
      'tokennodestate',
      'node-a',
    ]);
    assert.equal(left.status?.agent?.version, '0.1.0', 'node-a keeps what its own agent wrote');
  });

  test('the API calls the agent and the operator make are allowed with the chart RBAC', async () => {
    await cluster.apply(`apiVersion: netoken.io/v1alpha1
kind: TokenPolicy
metadata: {name: chart-rbac}
spec:
  token: {mode: Static, secretRef: {name: chart-rbac-token}}
  egress: {}
`);
    const agent = await agentKubeconfig(cluster, 'node-a', NS);
    const operator = await cluster.serviceAccountKubeconfig(NS, OPERATOR_SA);
    const ok = async (kubeconfig: string, args: string[], input?: string): Promise<string> => {
      const r = await cluster.kubectl(args, { kubeconfig, input });
      assert.equal(r.code, 0, `kubectl ${args.join(' ')} as ${kubeconfig === agent ? 'agent' : 'operator'}: ${r.stderr}`);
      return r.stdout;
    };
    const create = (kubeconfig: string, obj: object): Promise<string> =>
      ok(kubeconfig, ['create', '-n', NS, '-f', '-'], JSON.stringify(obj));
    // Operator: generate the key Secret, take the Lease, write the policy's status and finalizer.
    await create(operator, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'chart-rbac-token', namespace: NS },
      type: 'Opaque',
      data: { current: 'TlRva2VuISE=' },
    });
    await create(operator, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'netoken-operator', namespace: NS },
      spec: { holderIdentity: 'a', leaseDurationSeconds: 15 },
    });
    await ok(operator, ['get', 'lease', '-n', NS, 'netoken-operator']);
    await ok(operator, [
      'patch',
      'tokenpolicy',
      'chart-rbac',
      '--type=merge',
      '-p',
      '{"metadata":{"finalizers":["netoken.io/cleanup"]}}',
    ]);
    await ok(operator, statusPatch('tokenpolicy', 'chart-rbac', '{"status":{"observedGeneration":1}}'));
    await ok(operator, ['get', 'tokennodestates,nodes', '-o', 'name']);
    // Agent: read policies, its Node (by field selector) and the key Secret.
    await ok(agent, ['get', 'tokenpolicies', '-o', 'name']);
    await ok(agent, ['get', 'nodes', '--field-selector=metadata.name=node-a', '-o', 'name']);
    await ok(agent, ['get', 'secret', '-n', NS, 'chart-rbac-token', '-o', 'name']);
    const denied = await cluster.kubectl(['get', 'secrets', '-n', 'kube-system'], { kubeconfig: agent });
    assert.notEqual(denied.code, 0, 'the agent cannot read Secrets of other namespaces');
    await cluster.kubectlOk(['patch', 'tokenpolicy', 'chart-rbac', '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
    await cluster.kubectlOk(['delete', 'tokenpolicy', 'chart-rbac']);
  });

  test('helm uninstall removes the permissions and the admission policy', async () => {
    const r = await cluster.helm(['uninstall', 'netoken', '--namespace', NS], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `helm uninstall: ${r.stderr}`);
    const can = await cluster.kubectl([
      'auth',
      'can-i',
      'list',
      'tokenpolicies.netoken.io',
      `--as=system:serviceaccount:${NS}:${AGENT_SA}`,
    ]);
    assert.equal(can.stdout.trim(), 'no', 'the agent has no access after uninstall');
    const left = await cluster.kubectl(['get', 'validatingadmissionpolicy', 'netoken-agent-own-node-state']);
    assert.notEqual(left.code, 0, 'the admission policy is gone');
    const crds = await cluster.kubectl(['get', 'crd', 'tokenpolicies.netoken.io', '-o', 'name']);
    assert.equal(crds.code, 0, 'helm keeps the CRDs (and so the policies) after uninstall');
  });
});
