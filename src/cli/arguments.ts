import { Environment } from '../gen/keyward/v1/keyward';
import { usageError } from './CliError';

/** Values given as several arguments, repeated flags or comma-separated lists, in order. */
export function splitList(values: readonly string[] | undefined): string[] {
  return (values ?? []).flatMap((value) => value.split(',')).map((value) => value.trim()).filter((value) => value !== '');
}

/** `live` or `test` (commander has already refused anything else). */
export function parseEnvironment(value: string): Environment {
  return value === 'live' ? Environment.ENVIRONMENT_LIVE : Environment.ENVIRONMENT_TEST;
}

const RELATIVE = /^(\d+)([dh])$/;

/**
 * An expiry: an ISO 8601 date (`2027-01-31`, midnight UTC) or date and time
 * (`2027-01-31T18:00:00Z`), or a time from now (`90d`, `12h`).
 */
export function parseExpiry(value: string, now = Date.now()): Date {
  const relative = RELATIVE.exec(value);
  if (relative !== null) {
    const hours = Number(relative[1]) * (relative[2] === 'd' ? 24 : 1);
    return new Date(now + hours * 3_600_000);
  }
  const date = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(value) ? new Date(value) : new Date(Number.NaN);
  if (Number.isNaN(date.getTime())) {
    throw usageError(`--expires ${JSON.stringify(value)}: not a date (2027-01-31, 2027-01-31T18:00:00Z) or a time from now (90d, 12h)`);
  }
  return date;
}

/**
 * `--meta key=value` entries as metadata: split at the first `=` (a value
 * may hold `=` and commas); a key given twice is a usage error. The server
 * checks the limits.
 */
export function parseMetadata(entries: readonly string[] | undefined): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const entry of entries ?? []) {
    const at = entry.indexOf('=');
    if (at <= 0) throw usageError(`--meta ${JSON.stringify(entry)}: not key=value`);
    const key = entry.slice(0, at);
    if (Object.hasOwn(metadata, key)) throw usageError(`--meta ${JSON.stringify(key)}: given twice`);
    metadata[key] = entry.slice(at + 1);
  }
  return metadata;
}

const GRACE = /^(\d+)(ms|s|m|h|d)$/;
const GRACE_UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `--grace`: a whole number of ms, s, m, h or d (`0`, `90s`, `24h`, `7d`) as a Duration; the server checks the maximum. */
export function parseGrace(value: string): { seconds: bigint; nanos: number } {
  if (value === '0') return { seconds: 0n, nanos: 0 };
  const match = GRACE.exec(value);
  if (match === null) throw usageError(`--grace ${JSON.stringify(value)}: not a duration (0, 1500ms, 90s, 30m, 24h, 7d)`);
  const ms = BigInt(match[1] as string) * BigInt(GRACE_UNIT_MS[match[2] as keyof typeof GRACE_UNIT_MS]);
  return { seconds: ms / 1_000n, nanos: Number(ms % 1_000n) * 1_000_000 };
}
