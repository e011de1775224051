/**
 * Runs inside a test network namespace (started with `nsenter --net=...`, so bpffs pins
 * are shared with the test): the kernel resolves ifindexes in the caller's namespace,
 * both for a TCX attach and for BPF_PROG_TEST_RUN's ctx ifindex. Prints one JSON line.
 *
 *   attach <object> <pinRoot> <program> <ifindex> <linkPin>
 *   run    <object> <pinRoot> <program> <frameHex> <ctxHex>
 */
import { binding } from '../../src/native/binding.js';

function main(argv: string[]): void {
  const [cmd, object, pinRoot, program, a, b] = argv;
  if (!cmd || !object || !pinRoot || !program || a === undefined || b === undefined) {
    throw new Error(
      'usage: attach <object> <pinRoot> <program> <ifindex> <linkPin> | run <object> <pinRoot> <program> <frameHex> <ctxHex>',
    );
  }
  const obj = binding().openObject(object, { pinRoot });
  try {
    const prog = obj.program(program);
    if (cmd === 'attach') {
      const link = binding().createTcxLink(prog, Number(a), 'egress');
      link.pin(b);
      process.stdout.write(JSON.stringify({ linkId: link.info().id, progId: prog.info.id }) + '\n');
      link.close();
    } else if (cmd === 'run') {
      const r = prog.testRun({ data: Buffer.from(a, 'hex'), ctxIn: b ? Buffer.from(b, 'hex') : undefined });
      process.stdout.write(JSON.stringify({ retval: r.retval, data: r.data.toString('hex') }) + '\n');
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
    prog.close();
  } finally {
    obj.close();
  }
}

main(process.argv.slice(2));
