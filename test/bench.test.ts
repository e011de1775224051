/**
 * `npm run bench` end to end with tiny counts: every benchmark runs, every row is either
 * measured or listed as not yet available, and both result files are written. Nothing here
 * looks at speed: the numbers of a run this short mean nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { QUICK, runBenchmarks } from '../bench/run.js';
import { writeResults, type Results } from '../bench/report.js';

test('the benchmarks run and record every row, measured or not yet available', async () => {
  const results = await runBenchmarks(QUICK);
  const dir = mkdtempSync(path.join(tmpdir(), 'nttest-bench-'));
  try {
    const files = writeResults(dir, results);
    const rows = results.figures;
    const find = (group: string, benchmark: RegExp, config?: string): Results['figures'] =>
      rows.filter((f) => f.group === group && benchmark.test(f.benchmark) && (config === undefined || f.config === config));

    // Per packet: every case at every trie size.
    for (const config of ['1 prefix', '100 prefixes']) {
      for (const [name, baseline] of [
        [/^no-op tc program$/, null],
        [/^marker, non-SYN/, 'no-op tc program'],
        [/^marker, SYN no policy covers$/, 'budget'],
        [/^marker, SYN no policy covers, destination cache off/, 'marker, SYN no policy covers'],
        [/^seed's algorithm/, null],
        [/^marker, SYN it marks \(static token\)$/, "seed's algorithm (C port), SYN it marks"],
        [/^marker built for kernels before 6.2, SYN it marks \(static token\)$/, 'marker, SYN it marks (static token)'],
        [/^marker, SYN it marks \(keyed token\)$/, 'marker, SYN it marks (static token)'],
      ] as const) {
        const got = find('per packet', name, config);
        assert.equal(got.length, 1, `per packet ${name} at ${config}: got ${got.length} rows, want 1`);
        const f = got[0]!;
        assert.ok(
          f.value !== null && f.value > 0,
          `${f.benchmark} at ${config}: got value ${f.value}, want a positive ns/packet`,
        );
        assert.equal(f.unit, 'ns/packet');
        // Rows whose verdict is not decided get more runs, up to maxRuns.
        assert.ok(
          f.runs.length >= QUICK.packet.runs && f.runs.length <= QUICK.packet.maxRuns,
          `${f.benchmark}: ${f.runs.length} runs recorded`,
        );
        assert.equal(f.baseline?.benchmark ?? null, baseline, `${f.benchmark}: baseline`);
        if (baseline) assert.ok(f.ratio !== null && f.ratio > 0, `${f.benchmark}: got ratio ${f.ratio}, want a positive number`);
      }
    }
    const at1 = (name: RegExp): Results['figures'][number] => find('per packet', name, '1 prefix')[0]!;
    assert.deepEqual(at1(/^marker, non-SYN/).target, { kind: 'at most', ratio: 1.1 });
    assert.ok(['pass', 'FAIL', 'inconclusive'].includes(at1(/^marker, non-SYN/).verdict), 'a row with a target gets a verdict');
    assert.deepEqual(at1(/^marker, SYN it marks \(static token\)$/).target, { kind: 'at most', ratio: 1.3 });
    assert.deepEqual(at1(/keyed token/).target, { kind: 'at most', ratio: 1.6 });
    // A time budget: the value over 60 ns, at most 1.
    const uncovered = at1(/^marker, SYN no policy covers$/);
    assert.deepEqual([uncovered.baseline?.value, uncovered.target], [60, { kind: 'at most', ratio: 1 }]);

    // Ingress rows do not read the destination trie: measured once, each against its no-op program.
    for (const [name, baseline] of [
      [/^no-op XDP program$/, null],
      [/^verifier, non-SYN/, 'no-op XDP program'],
      [/^verifier, SYN without a token/, 'budget'],
      [/^verifier, SYN with a valid token$/, 'no-op XDP program'],
      [/^verifier, SYN with an invalid token/, 'no-op XDP program'],
      [/^verifier \(keyed policy\), SYN with a valid token$/, 'no-op XDP program'],
      [/^verifier at tc ingress \(keyed policy\), SYN with a valid token$/, 'no-op tc program'],
    ] as const) {
      const got = find('per packet', name);
      assert.equal(got.length, 1, `per packet ${name}: got ${got.length} rows, want 1 (measured once)`);
      const f = got[0]!;
      assert.equal(f.config, 'ingress (no trie)');
      assert.ok(f.value !== null && f.value > 0, `${f.benchmark}: got value ${f.value}, want a positive ns/packet`);
      assert.equal(f.baseline?.benchmark ?? null, baseline, `${f.benchmark}: baseline`);
    }

    // Rows for parts that are not built yet: listed, never given a number.
    for (const f of rows.filter((x) => x.verdict === 'not yet available')) {
      assert.equal(f.value, null, `${f.benchmark}: an unavailable row has no value`);
      assert.equal(f.ratio, null);
      assert.ok(f.note && f.note.length > 0, `${f.benchmark}: an unavailable row says why`);
    }

    // Connections: both modes for every configuration, bulk with and without the marker.
    for (const mode of [/1 client thread/, /2 client threads/]) {
      for (const config of ['no hook', 'marker']) {
        const got = find('connection rate', mode, config);
        assert.equal(got.length, 1, `connection rate ${mode} ${config}: got ${got.length} rows`);
        assert.ok(got[0]!.value !== null && got[0]!.value > 0, `connection rate ${mode} ${config}: got ${got[0]!.value}`);
      }
      assert.equal(find('connection rate', mode, 'marker + verifier (Enforce)').length, 1);
      assert.deepEqual(find('connection rate', mode, 'marker')[0]!.target, { kind: 'at least', ratio: 0.95 });
    }
    for (const config of ['no hook', 'marker', 'verifier (tc, Enforce on another port)']) {
      const got = find('bulk throughput', /one established connection/, config);
      assert.equal(got.length, 1, `bulk ${config}: got ${got.length} rows`);
      assert.ok(got[0]!.value !== null && got[0]!.value > 0, `bulk ${config}: got ${got[0]!.value} Gbit/s`);
    }
    assert.deepEqual(
      find('bulk throughput', /one established connection/, 'verifier (tc, Enforce on another port)')[0]!.target,
      { kind: 'at least', ratio: 0.95 },
      'received bulk data with the verifier: at least 0.95x no hook',
    );
    assert.equal(
      find('connection rate', /./, 'verifier (tc, Enforce on another port)').length,
      0,
      'the verifier-only setup is measured for bulk receive only',
    );
    const opened = (results.details.connections as { connectionsOpened: Record<string, number> }).connectionsOpened;
    const marked =
      (results.details.connections as { counters: Record<string, Record<string, number>> }).counters.marker?.marked ?? 0;
    assert.ok(marked >= (opened.marker ?? Infinity), `the marker marked ${marked} SYNs for ${opened.marker} connections`);

    // SYN flood: both figures for the no-op drop, the verifier and no hook.
    for (const name of [/^unmarked SYN flood, .*SYNs handled per second$/, /^unmarked SYN flood: CPU per SYN/]) {
      for (const config of ['no-op XDP program (XDP_DROP)', 'verifier (Enforce)', 'no hook (to a listener)']) {
        const got = rows.filter((f) => name.test(f.benchmark) && f.config === config);
        assert.equal(got.length, 1, `SYN flood ${name} ${config}: got ${got.length} rows, want 1`);
        assert.ok(got[0]!.value !== null && got[0]!.value > 0, `SYN flood ${name} ${config}: got ${got[0]!.value}`);
      }
    }
    const flood = rows.find((f) => /SYNs handled per second$/.test(f.benchmark) && f.config === 'verifier (Enforce)');
    assert.deepEqual(flood?.target, { kind: 'at least', ratio: 0.95 });
    const counters = (results.details.flood as { verifierCounters: Record<string, number> }).verifierCounters;
    assert.ok((counters.verify_dropped ?? 0) > 0, `the verifier dropped ${counters.verify_dropped} SYNs of the flood, want some`);

    // Control plane: one set of rows from each of its benchmarks (bench/controlplane/).
    const policies = `${QUICK.controlplane.loadPolicies} policies applied`;
    for (const [name, configs] of [
      [
        /^kubectl apply → token on the wire$/,
        [`p50 of ${QUICK.controlplane.applies} applies`, `p99 of ${QUICK.controlplane.applies} applies`],
      ],
      [
        /^kubectl delete → hook gone from the interface$/,
        [`p50 of ${QUICK.controlplane.applies} deletes`, `p99 of ${QUICK.controlplane.applies} deletes`],
      ],
      [/^agent resident memory$/, ['idle, no policy', policies, 'idle, standalone (policy file, one policy)']],
      [/^operator resident memory$/, ['idle, no policy', policies]],
      [/^agent CPU$/, ['idle, no policy', policies, 'idle, standalone (policy file, one policy)']],
      [/^operator CPU$/, ['idle, no policy', policies]],
      [/^map update: first apply of one policy$/, ['1 000 prefixes']],
      [/^map update: re-apply, one prefix changed$/, ['1 000 prefixes']],
      [/^status aggregation, pure function \(aggregateStatus\)$/, [`${QUICK.controlplane.simulatedNodes} nodes`]],
      [/^status aggregation: last node report → policy status shows every node$/, [`${QUICK.controlplane.simulatedNodes} nodes`]],
    ] as const) {
      const got = find('control plane', name);
      assert.deepEqual(
        got.map((f) => f.config),
        configs,
        `control plane ${name}: the configurations of its rows`,
      );
      for (const f of got) {
        const floor = / CPU$/.test(f.benchmark) ? 0 : Number.MIN_VALUE; // an idle process may use no CPU in a short window
        assert.ok(f.value !== null && f.value >= floor, `${f.benchmark} (${f.config}): got ${f.value} ${f.unit}`);
      }
    }
    assert.deepEqual(
      find('control plane', /^kubectl apply → token on the wire$/)[1]!.target,
      { kind: 'at most', ratio: 1 },
      'apply → wire p99 against its budget',
    );

    // Control plane at cluster scale (scale.ts): each row once, with its budget where the design sets one.
    const sc = QUICK.controlplane.scale;
    const grid = `${sc.policies} policies × ${sc.nodes} nodes`;
    for (const [name, config, target] of [
      [/^one prefix changed: computeDesired \+ apply$/, '1 000 prefixes', { kind: 'at most', ratio: 1 }],
      [
        /^scale: kubectl create → all applied on the wire and Ready$/,
        `${sc.policies} policies × 1 node`,
        { kind: 'at most', ratio: 1 },
      ],
      [
        /^agent resident memory growth, idle → policies applied$/,
        `${sc.policies} policies applied`,
        { kind: 'at most', ratio: 1 },
      ],
      [/^scale: kubectl create → all Ready on every node$/, grid, { kind: 'at most', ratio: 1 }],
      [/^scale: operator writes to TokenPolicies \(status, finalizer\) per policy$/, grid, null],
      [/^scale: TokenNodeState writes per node \(agents\)$/, grid, null],
      [/^scale: request bytes written to the API server$/, grid, null],
      [
        /^steady state: TokenNodeState writes of the node's agent$/,
        `${grid}, ${sc.steadySeconds} s window`,
        { kind: 'at most', ratio: 1 },
      ],
      [/^steady state: TokenPolicy status writes$/, `${grid}, ${sc.steadySeconds} s window`, { kind: 'zero' }],
      [/^one node joins: operator status writes per policy$/, `${grid} + 1`, { kind: 'at most', ratio: 1 }],
      [/^one node joins: reconciles of the real node's agent$/, `${grid} + 1`, { kind: 'zero' }],
    ] as const) {
      const got = find('control plane', name);
      assert.deepEqual(
        got.map((f) => f.config),
        [config],
        `control plane ${name}: the configuration of its row`,
      );
      const f = got[0]!;
      // A growth is a difference: with a few policies, what the agent gives back after its work can outweigh them.
      const floor = /growth/.test(f.benchmark) ? -Infinity : 0;
      assert.ok(f.value !== null && Number.isFinite(f.value) && f.value >= floor, `${f.benchmark}: got ${f.value} ${f.unit}`);
      assert.deepEqual(f.target, target, `${f.benchmark}: its target`);
      if (target)
        assert.ok(
          ['pass', 'FAIL', 'inconclusive'].includes(f.verdict),
          `${f.benchmark}: a row with a target gets a verdict, got ${f.verdict}`,
        );
    }
    // Every policy was Ready on every node, each node's report taken: the writes were counted from the audit log.
    assert.ok(
      find('control plane', /^scale: operator writes to TokenPolicies/)[0]!.value! >= 1,
      "the operator wrote each policy's status at least once",
    );
    assert.ok(
      find('control plane', /^scale: TokenNodeState writes per node/)[0]!.value! >= 1,
      'each node wrote its report at least once',
    );

    // The machine and both files.
    assert.ok(results.machine.nproc > 0 && results.machine.kernel.length > 0 && results.machine.loadAverageStart.length === 3);
    const json = JSON.parse(readFileSync(files.json, 'utf8')) as Results;
    assert.equal(json.figures.length, rows.length, 'latest.json holds every row');
    const md = readFileSync(files.md, 'utf8');
    assert.match(md, /\| benchmark \| config \| value \(unit\) \| baseline \| ratio \| target \| verdict \|/);
    assert.equal(
      md.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| benchmark')).length,
      rows.length,
      'latest.md has one table line per row',
    );
    assert.match(md, new RegExp(`${results.machine.nproc} CPUs`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
