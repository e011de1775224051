/**
 * Running short host commands with a deadline and errors that say what failed.
 */
import { execFile } from 'node:child_process';

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** kill the command after this long (default 30 s) */
  timeoutMs?: number;
  /** extra environment variables */
  env?: Record<string, string>;
}

/** A command that exited non-zero, was killed, or could not start. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    const how = signal !== null ? `killed by ${signal}` : `exit code ${exitCode ?? '?'}`;
    const detail = stderr.trim() || stdout.trim();
    super(`\`${argv.join(' ')}\` failed (${how})${detail ? `: ${detail}` : ''}`);
    this.name = 'CommandError';
  }
}

/** Runs `cmd args` to completion and resolves with its output; rejects with a CommandError naming the command and its stderr. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = [cmd, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
        env: opts.env ? { ...process.env, ...opts.env } : process.env,
      },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: string | null; killed?: boolean };
          if (typeof e.code === 'string') {
            // spawn failure such as ENOENT: the tool is missing
            reject(new CommandError(argv, null, null, stdout, `${e.code}: ${e.message}`));
            return;
          }
          reject(new CommandError(argv, typeof e.code === 'number' ? e.code : null, e.signal ?? null, stdout, stderr));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}
