/**
 * Runs inside a test network namespace (started with `nsenter --net=...`, so bpffs pins are
 * shared with the test) and drives the agent's own interface listing and data path there,
 * printing one JSON line:
 *
 *   interfaces
 *       every interface as the agent sees it, with its link layer and whether the verifier
 *       may go at native XDP there
 *   apply <stateDir> <runDir> <auto|xdp-native|xdp-generic|tc> <hooks JSON>
 *       open the data path and apply a desired state holding just these ingress hooks
 *       ({ifindex, name, layer, xdpNative}[]); prints the ApplyResult
 */
import { Datapath } from '../../src/agent/datapath.js';
import { emptyDesiredState, type DesiredHook, type DesiredState } from '../../src/agent/desired.js';
import { linkLayer, listInterfaces, nativeXdpCandidate } from '../../src/agent/interfaces.js';
import { createLogger } from '../../src/lib/log.js';
import { bpfObjectPath } from '../../src/lib/package.js';

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === 'interfaces') {
    const all = await listInterfaces();
    process.stdout.write(
      JSON.stringify(all.map((i) => ({ ...i, layer: linkLayer(i), xdpNative: nativeXdpCandidate(i) }))) + '\n',
    );
    return;
  }
  if (cmd === 'apply') {
    const [stateDir, runDir, ingressAttach, hooksJson] = rest;
    if (!stateDir || !runDir || !ingressAttach || !hooksJson)
      throw new Error('usage: apply <stateDir> <runDir> <mode> <hooks JSON>');
    const hooks = JSON.parse(hooksJson) as Array<Pick<DesiredHook, 'ifindex' | 'name' | 'layer' | 'xdpNative'>>;
    const log = createLogger({ format: 'json', level: 'error' });
    const dp = Datapath.open({
      stateDir,
      runDir,
      objectPath: bpfObjectPath('marker'),
      attach: 'auto',
      ingressAttach: ingressAttach as 'auto' | 'xdp-native' | 'xdp-generic' | 'tc',
      tcPriority: 1,
      log,
    });
    try {
      const desired: DesiredState = {
        ...emptyDesiredState(),
        hooks: new Map(hooks.map((h) => [`${h.ifindex}/ingress`, { ...h, direction: 'ingress' as const, policies: ['probe'] }])),
      };
      const r = dp.apply(desired);
      process.stdout.write(
        JSON.stringify({
          hooks: r.hooks.map((h) => ({ name: h.name, mode: h.mode })),
          errors: r.errors.map((e) => ({ name: e.name, reason: e.reason, message: e.message })),
        }) + '\n',
      );
    } finally {
      dp.close();
    }
    return;
  }
  throw new Error(`unknown command ${String(cmd)}`);
}

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
