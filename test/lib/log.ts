/** A logger whose JSON lines a test reads back (what a user would see in the process's log). */
import { Writable } from 'node:stream';
import winston from 'winston';
import type { Logger } from '../../src/lib/log.js';

export function recordingLogger(level = 'debug'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = winston.createLogger({
    level,
    format: winston.format.json(),
    transports: [
      new winston.transports.Stream({
        stream: new Writable({
          write: (c: Buffer, _e, cb) => {
            lines.push(c.toString());
            cb();
          },
        }),
      }),
    ],
  });
  return { log, lines };
}
