/**
 * Opens a connection to host:port every `everyMs` without waiting for the one before: with
 * nothing listening there, each attempt is one SYN and an RST. apply-to-wire.ts runs it on
 * the node, so that a policy's token shows up on the wire within a few ms of being applied.
 *
 *   node syn-loop.js <host> <port> <everyMs>
 */
import net from 'node:net';

const [host, port, everyMs] = process.argv.slice(2);
const tick = (): void => {
  const s = net.connect({ host, port: Number(port) });
  const done = (): void => {
    s.destroy();
  };
  s.on('connect', done);
  s.on('error', done);
  setTimeout(tick, Number(everyMs));
};
tick();
