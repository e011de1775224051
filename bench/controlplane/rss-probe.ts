/**
 * The resident memory of a node process that has imported one module, or none: what the
 * agent's and the operator's memory rows start from (resources.ts runs it).
 *
 *   node rss-probe.js [module]
 *
 * prints VmRSS in MiB, half a second after the import.
 */
import { sleep } from '../../src/lib/wait.js';
import { rssMiB } from './proc.js';

if (process.argv[2]) await import(process.argv[2]);
await sleep(500);
process.stdout.write(String(rssMiB('self')));
