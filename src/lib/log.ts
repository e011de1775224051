/**
 * Structured logging: JSON lines in a cluster (or when asked), readable lines on a terminal.
 * Every line carries the key of the object it is about (policy, interface, node) as a field.
 */
import winston from 'winston';

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
    format: winston.format.combine(winston.format.timestamp(), format === 'json' ? winston.format.json() : text),
    // stderr keeps stdout free for command output (status tables, JSON).
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose', 'silly'] })],
  });
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
