import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from './config.js';
import { parseOperatorOptions } from './operator.js';

test('operator flags default as documented', () => {
  const cfg = parseOperatorOptions({}, { POD_NAME: 'op-1' });
  assert.equal(cfg.namespace, 'netoken-system');
  assert.equal(cfg.leaderElect, true);
  assert.equal(cfg.leaseName, 'netoken-operator');
  assert.equal(cfg.identity, 'op-1');
  assert.equal(cfg.metricsAddress, ':9091');
  assert.equal(cfg.finalizerTimeoutMs, 120_000);
  assert.equal(cfg.keyRetireMarginMs, 60_000);
  assert.equal(cfg.agentGraceMs, 120_000);
  assert.equal(cfg.workers, 4);
  assert.equal(cfg.kubeconfig, undefined);
  assert.equal(cfg.logLevel, 'info');
});

test('POD_NAMESPACE sets the namespace unless --namespace is given', () => {
  assert.equal(parseOperatorOptions({}, { POD_NAMESPACE: 'kube-netoken' }).namespace, 'kube-netoken');
  assert.equal(parseOperatorOptions({ namespace: 'other' }, { POD_NAMESPACE: 'kube-netoken' }).namespace, 'other');
});

test('flags are parsed', () => {
  const cfg = parseOperatorOptions(
    {
      leaderElect: 'false',
      finalizerTimeout: '90s',
      agentGrace: '5s',
      metricsAddress: '127.0.0.1:0',
      kubeconfig: '/k',
      logLevel: 'debug',
      logFormat: 'json',
    },
    {},
  );
  assert.equal(cfg.leaderElect, false);
  assert.equal(parseOperatorOptions({ leaderElect: true }, {}).leaderElect, true, 'a bare --leader-elect means true');
  assert.equal(cfg.finalizerTimeoutMs, 90_000);
  assert.equal(parseOperatorOptions({ keyRetireMargin: '5s' }, {}).keyRetireMarginMs, 5000);
  assert.equal(cfg.agentGraceMs, 5000);
  assert.equal(parseOperatorOptions({ workers: '16' }, {}).workers, 16);
  assert.equal(cfg.metricsAddress, '127.0.0.1:0');
  assert.equal(cfg.kubeconfig, '/k');
  assert.equal(parseOperatorOptions({ metricsAddress: '' }, {}).metricsAddress, '', 'empty turns the endpoints off');
  assert.equal(cfg.logFormat, 'json');
});

test('bad flags are refused with a message that says what is expected', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ leaderElect: 'yes' }, /--leader-elect must be true or false, got "yes"/],
    [{ finalizerTimeout: '2 minutes' }, /--finalizer-timeout must be a duration such as 2m or 90s/],
    [{ keyRetireMargin: 'soon' }, /--key-retire-margin must be a duration such as 1m or 30s, got "soon"/],
    [{ agentGrace: 'soon' }, /--agent-grace must be a duration such as 2m or 30s, got "soon"/],
    [{ workers: '0' }, /--workers must be a whole number from 1 to 64, got "0"/],
    [{ workers: '2.5' }, /--workers must be a whole number from 1 to 64, got "2.5"/],
    [{ workers: '65' }, /--workers must be a whole number from 1 to 64/],
    [{ metricsAddress: 'localhost:http' }, /--metrics-address: "localhost:http" is not a listen address/],
    [{ metricsAddress: ':70000' }, /--metrics-address/],
    [{ namespace: 'Bad_NS' }, /--namespace must be a namespace name/],
    [{ logLevel: 'loud' }, /--log-level must be one of/],
  ];
  for (const [o, want] of cases) {
    assert.throws(
      () => parseOperatorOptions(o, {}),
      (err: unknown) => err instanceof UsageError && want.test(err.message),
      `options ${JSON.stringify(o)}`,
    );
  }
});
