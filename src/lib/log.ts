/**
 * Structured logging: JSON lines in a cluster (or when asked), readable lines on a terminal.
 * Every line carries the key of the object it is about (policy, interface, node) as a field.
 */
import { writeSync } from 'node:fs';
import winston from 'winston';
import TransportStream from 'winston-transport';
import { isoTime } from './time.js';

export type LogFormat = 'json' | 'text';
export type Logger = winston.Logger;

export function createLogger(opts: { level?: string; format?: LogFormat } = {}): Logger {
  const format = opts.format ?? (process.stderr.isTTY ? 'text' : 'json');
  const text = winston.format.printf((info) => {
    const { level, message, timestamp, ...rest } = info;
    const fields = Object.entries(rest)
      .filter(([k]) => typeof k === 'string')
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    return `${String(timestamp)} ${level.padEnd(5)} ${String(message)}${fields ? ' ' + fields : ''}`;
  });
  return winston.createLogger({
    level: opts.level ?? 'info',
    // The time in UTC, to the millisecond (isoTime: winston's default calls toISOString).
    format: winston.format.combine(
      winston.format.timestamp({ format: () => isoTime() }),
      format === 'json' ? winston.format.json() : text,
    ),
    // stderr keeps stdout free for command output (status tables, JSON).
    transports: [new StderrLines()],
  });
}

const MESSAGE = Symbol.for('message');
/** Lines formatted but not yet written, shared by every logger of the process. */
let pending: string[] = [];
let flushScheduled = false;
/** whether the 'exit' hook that writes what is pending is in place */
let exitHooked = false;

function flushLines(): void {
  flushScheduled = false;
  if (pending.length === 0) return;
  const text = pending.join('');
  pending = [];
  process.stderr.write(text);
}

/**
 * Writes each turn of the event loop's lines to stderr together. In a container stderr is a
 * pipe, which Node writes synchronously, one write(2) per line, and each waits while the reader
 * is behind: a thousand policies going Ready held the operator's event loop for 0.2 s in those
 * writes alone. What is still pending when the process exits (a fatal error included) is
 * written then.
 */
class StderrLines extends TransportStream {
  constructor() {
    super();
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', () => {
        if (pending.length === 0) return;
        try {
          writeSync(2, pending.join(''));
        } catch {
          // stderr is gone: nothing to tell
        }
        pending = [];
      });
    }
  }

  override log(info: Record<string | symbol, unknown>, next: () => void): void {
    pending.push(`${String(info[MESSAGE])}\n`);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushLines);
    }
    next();
  }
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
