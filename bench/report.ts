import { LOAD_SHAPES, type LoadShape, SHAPE_LABELS, spread } from './loadGenerators';
import { mean, median } from './stats';

/** One measured step. */
export interface StepResult {
  readonly caseId: string;
  readonly inFlight: number;
  /** How the calls in flight shared connections. */
  readonly shape: LoadShape;
  readonly repeat: number;
  readonly callsPerSec: number;
  readonly latencyUs: { readonly p50: number; readonly p99: number; readonly p999: number };
  readonly cpuUsPerCall: number;
  /** The floor steps around this one (keyward steps only). */
  readonly floor?: { readonly callsPerSec: number; readonly p99: number; readonly cpuUsPerCall: number };
  readonly usageStatements: number;
  readonly postgresLookups: number;
  readonly redisLookups: number;
  readonly redisErrors: number;
  readonly calls: number;
}

export interface CaseInfo {
  readonly id: string;
  readonly label: string;
  /** Calls per h2load request (a VerifyStream request carries many). */
  readonly perRequest: number;
}

export interface Row {
  readonly caseId: string;
  readonly label: string;
  readonly inFlight: number;
  readonly shape: LoadShape;
  readonly callsPerSec: number;
  readonly ratio: { readonly median: number; readonly min: number; readonly max: number } | undefined;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly p99Ratio: number | undefined;
  readonly cpuUsPerCall: number;
  readonly cpuRatio: number | undefined;
  readonly usageStatementsPer100k: number;
  readonly postgresLookupsPer100k: number;
  /** Verify lookups answered by Redis: below 100,000 when calls of one key share a read (the in-process cache off, one hot key). */
  readonly redisLookupsPer100k: number;
}

/**
 * Per case, level and load shape over the repeats: ratios are taken step by step against
 * the floor steps around each step, and their median is reported (with the
 * spread); absolute figures are means.
 */
export function aggregate(steps: readonly StepResult[], cases: readonly CaseInfo[]): Row[] {
  const rows: Row[] = [];
  const levels = [...new Set(steps.map((s) => s.inFlight))].sort((a, b) => a - b);
  for (const shape of LOAD_SHAPES) {
    for (const level of levels) {
      for (const info of cases) {
        const mine = steps.filter((s) => s.caseId === info.id && s.inFlight === level && s.shape === shape);
        if (mine.length === 0) continue;
        const ratios = mine.filter((s) => s.floor !== undefined).map((s) => s.callsPerSec / (s.floor?.callsPerSec ?? 1));
        const calls = mine.reduce((sum, s) => sum + s.calls, 0);
        rows.push({
          caseId: info.id,
          label: info.label,
          inFlight: level,
          shape,
          callsPerSec: mean(mine.map((s) => s.callsPerSec)),
          ratio: ratios.length === 0 ? undefined : { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) },
          p50: mean(mine.map((s) => s.latencyUs.p50)),
          p99: mean(mine.map((s) => s.latencyUs.p99)),
          p999: mean(mine.map((s) => s.latencyUs.p999)),
          p99Ratio: ratios.length === 0 ? undefined : median(mine.map((s) => s.latencyUs.p99 / (s.floor?.p99 ?? 1))),
          cpuUsPerCall: mean(mine.map((s) => s.cpuUsPerCall)),
          cpuRatio: ratios.length === 0 ? undefined : median(mine.map((s) => s.cpuUsPerCall / (s.floor?.cpuUsPerCall ?? 1))),
          usageStatementsPer100k: (100_000 * mine.reduce((sum, s) => sum + s.usageStatements, 0)) / calls,
          postgresLookupsPer100k: (100_000 * mine.reduce((sum, s) => sum + s.postgresLookups, 0)) / calls,
          redisLookupsPer100k: (100_000 * mine.reduce((sum, s) => sum + s.redisLookups, 0)) / calls,
        });
      }
    }
  }
  return rows;
}

const n0 = (v: number): string => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');
const n2 = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(2));

export function rowsTable(rows: readonly Row[]): string {
  const lines = [
    '| case | in flight | connections × streams | calls/s | × floor, median (min–max) | p50 µs | p99 µs | p99.9 µs | p99 × floor | CPU µs/call | CPU × floor |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const ratio = r.ratio === undefined ? '–' : `${n2(r.ratio.median)} (${n2(r.ratio.min)}–${n2(r.ratio.max)})`;
    lines.push(
      `| ${r.label} | ${r.inFlight} | ${SHAPE_LABELS[r.shape]}: ${spread(r.inFlight, r.shape).clients} × ${spread(r.inFlight, r.shape).streams} | ${n0(r.callsPerSec)} | ${ratio} | ${n0(r.p50)} | ${n0(r.p99)} | ${n0(r.p999)} | ${n2(r.p99Ratio)} | ${r.cpuUsPerCall.toFixed(1)} | ${n2(r.cpuRatio)} |`,
    );
  }
  return lines.join('\n');
}

export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
}

export function targetsTable(checks: readonly TargetCheck[]): string {
  return [
    '| target | measured | met |',
    '|---|---|---|',
    ...checks.map((c) => `| ${c.target} | ${c.measured} | ${c.met ? 'yes' : '**no**'} |`),
  ].join('\n');
}
