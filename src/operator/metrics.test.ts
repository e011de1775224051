import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OperatorMetrics, type PolicyStatusView } from './metrics.js';

test('policy gauges: one series per condition and node count, none before the caches have listed', async () => {
  const m = new OperatorMetrics({ processMetrics: false });
  let policies: PolicyStatusView[] | undefined;
  m.setSources({ leader: () => 1, queueDepth: () => 0, policies: () => policies });
  const before = await m.registry.metrics();
  assert.doesNotMatch(before, /^netoken_policy_\w+\{/m, 'no policy series while the caches are not synced');

  policies = [
    {
      name: 'web',
      conditions: [
        { type: 'Ready', status: 'False', reason: 'NodesFailing' },
        { type: 'Degraded', status: 'True', reason: 'KeyRotationStalled' },
      ],
      nodes: { selected: 3, ready: 1, failed: 2 },
    },
    { name: 'new', conditions: [] },
  ];
  const text = await m.registry.metrics();
  assert.match(text, /^netoken_policy_condition\{policy="web",type="Ready",status="False",reason="NodesFailing"\} 1$/m);
  assert.match(text, /^netoken_policy_condition\{policy="web",type="Degraded",status="True",reason="KeyRotationStalled"\} 1$/m);
  assert.match(text, /^netoken_policy_nodes_selected\{policy="web"\} 3$/m);
  assert.match(text, /^netoken_policy_nodes_ready\{policy="web"\} 1$/m);
  assert.match(text, /^netoken_policy_nodes_failed\{policy="web"\} 2$/m);
  assert.doesNotMatch(text, /policy="new"/, 'a policy without status yet has no series');

  // A condition that changes reason leaves no stale series behind.
  policies = [
    {
      name: 'web',
      conditions: [{ type: 'Ready', status: 'True', reason: 'AllNodesReady' }],
      nodes: { selected: 3, ready: 3, failed: 0 },
    },
  ];
  const after = await m.registry.metrics();
  assert.doesNotMatch(after, /reason="(NodesFailing|KeyRotationStalled)"/);
  assert.match(after, /^netoken_policy_condition\{policy="web",type="Ready",status="True",reason="AllNodesReady"\} 1$/m);
});
