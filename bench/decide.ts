/**
 * Measuring until the verdicts are decided. Rows are measured in rounds, every row once per
 * round, interleaved (the caller rotates the order), so that a change in the machine's load
 * hits a row and its baseline alike. After the first rounds, only rows whose verdict is still
 * inconclusive (their interval straddles the target) and the baselines they are divided by
 * are measured again, round after round, until each is decided, or the rounds or the time
 * budget run out: a row still inconclusive then counts as not met.
 *
 * A row's value in a round is paired with its baseline's in the same round; rows that stop
 * early keep the rounds they have.
 */
import { figure, type Figure, type FigureSpec, type Target } from './report.js';

export interface Budget {
  /** rounds every row gets */
  minRounds: number;
  /** rounds a row may get at most */
  maxRounds: number;
  /** wall-clock seconds after which no new round starts */
  seconds: number;
}

export interface RowSpec {
  id: string;
  /** id of the row it is divided by */
  baseline?: string;
  /** or a fixed value it is divided by (a time budget in the row's unit): the target is then on value / budget */
  budget?: number;
  target?: Target | null;
}

/** What the rounds measured: round number -> value, for each row. */
export type Samples = Map<string, Map<number, number>>;

/**
 * The paired runs of `row` and what it is divided by: with a baseline row, the rounds in
 * which both were measured, in order; with a budget, that value beside every run.
 */
export function paired(
  samples: Samples,
  row: Pick<RowSpec, 'id' | 'baseline' | 'budget'>,
): { runs: number[]; baselineRuns?: number[] } {
  const own = samples.get(row.id) ?? new Map<number, number>();
  if (row.budget !== undefined) {
    const runs = [...own.values()];
    return { runs, baselineRuns: runs.map(() => row.budget as number) };
  }
  if (!row.baseline) return { runs: [...own.values()] };
  const base = samples.get(row.baseline) ?? new Map<number, number>();
  const rounds = [...own.keys()].filter((r) => base.has(r)).sort((a, b) => a - b);
  return { runs: rounds.map((r) => own.get(r) as number), baselineRuns: rounds.map((r) => base.get(r) as number) };
}

/** The verdict a row would get from the samples so far. */
export function verdictOf(samples: Samples, row: RowSpec): Figure['verdict'] {
  const { runs, baselineRuns } = paired(samples, row);
  const spec: FigureSpec = { group: 'per packet', benchmark: row.id, config: '', unit: '', runs, target: row.target ?? null };
  if (baselineRuns) Object.assign(spec, { baselineRuns, baseline: { benchmark: row.baseline ?? 'budget', value: null } });
  return figure(spec).verdict;
}

export interface DecideResult {
  samples: Samples;
  rounds: number;
  seconds: number;
  /** rows still inconclusive when the rounds or the time ran out */
  undecided: string[];
}

/**
 * Runs rounds of `measure` (which measures the given rows once each, in an order it may
 * rotate by round, and returns their values) until every targeted row is decided.
 */
export async function untilDecided(
  rows: readonly RowSpec[],
  budget: Budget,
  measure: (ids: readonly string[], round: number) => Promise<Map<string, number>> | Map<string, number>,
  log: (line: string) => void = () => undefined,
): Promise<DecideResult> {
  const samples: Samples = new Map(rows.map((r) => [r.id, new Map<number, number>()]));
  const started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const undecided = (): RowSpec[] => rows.filter((r) => r.target && verdictOf(samples, r) === 'inconclusive');
  let round = 0;
  let active: string[] = rows.map((r) => r.id);
  for (; round < budget.maxRounds; round++) {
    if (round >= budget.minRounds) {
      const open = undecided();
      if (open.length === 0) break;
      if (elapsed() >= budget.seconds) break;
      // The undecided rows and what they are divided by, in table order.
      const need = new Set(open.flatMap((r) => (r.baseline && r.budget === undefined ? [r.id, r.baseline] : [r.id])));
      active = rows.filter((r) => need.has(r.id)).map((r) => r.id);
      if (round === budget.minRounds)
        log(
          `${open.length} verdict(s) not decided after ${round} rounds (${open.map((r) => r.id).join(', ')}): measuring those again`,
        );
    }
    const values = await measure(active, round);
    for (const [id, v] of values) samples.get(id)?.set(round, v);
  }
  return { samples, rounds: round, seconds: elapsed(), undecided: undecided().map((r) => r.id) };
}
