import { type ApiKey, Environment, type VerifyResponse, environmentToJSON, verifyCodeToJSON } from '../gen/keyward/v1/keyward';
import { verdictReason } from './verdictReason';

/** `live`/`test`, as the command line spells environments. */
export function environmentName(environment: Environment): string {
  if (environment === Environment.ENVIRONMENT_LIVE) return 'live';
  if (environment === Environment.ENVIRONMENT_TEST) return 'test';
  return environmentToJSON(environment);
}

/** `2026-12-02T09:28:25Z`: to the second, UTC. */
function time(date: Date | undefined, absent: string): string {
  return date === undefined ? absent : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** active, revoked, disabled or expired (at `now`), in Verify's order. */
export function keyStatus(key: ApiKey, now = new Date()): string {
  if (key.revokedAt !== undefined) return 'revoked';
  if (key.disabledAt !== undefined) return 'disabled';
  if (key.expiresAt !== undefined && key.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'active';
}

function lastUse(key: ApiKey): string {
  if (key.lastUsedAt === undefined) return 'never';
  return key.lastUsedIp === '' ? time(key.lastUsedAt, '') : `${time(key.lastUsedAt, '')} from ${key.lastUsedIp}`;
}

/** Lines `label  value`, labels padded to one width. */
function fields(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`.trimEnd()).join('\n') + '\n';
}

/** Metadata on one line, `key=value` in key order, a value quoted (JSON) when it holds spaces, quotes, commas or nothing; '-' when none. */
export function formatMetadata(metadata: Readonly<Record<string, string>>): string {
  const keys = Object.keys(metadata).sort();
  if (keys.length === 0) return '-';
  return keys
    .map((key) => {
      const value = metadata[key] ?? '';
      return `${key}=${value === '' || /[\s",=\\]/.test(value) ? JSON.stringify(value) : value}`;
    })
    .join(' ');
}

/** One key, a field per line; `rotated from` and `replaced by` only when RotateKey set them. */
export function formatKey(key: ApiKey): string {
  const rotation: Array<readonly [string, string]> = [];
  if (key.rotatedFromKeyId !== '') rotation.push(['rotated from', key.rotatedFromKeyId]);
  if (key.replacedByKeyId !== '') rotation.push(['replaced by', key.replacedByKeyId]);
  return fields([
    ['id', key.id],
    ['account', key.accountId],
    ['name', key.name],
    ['environment', environmentName(key.environment)],
    ['key', key.display],
    ['status', keyStatus(key)],
    ['scopes', key.scopes.join(' ')],
    ['ip whitelist', key.ipWhitelist.length === 0 ? 'any address' : key.ipWhitelist.join(' ')],
    ['created', time(key.createdAt, '-')],
    ['expires', time(key.expiresAt, 'never')],
    ['revoked', time(key.revokedAt, '-')],
    ['disabled', time(key.disabledAt, '-')],
    ['last used', lastUse(key)],
    ['uses', `${key.requestCount} (${key.refusedCount} refused)`],
    ['metadata', formatMetadata(key.metadata)],
    ...rotation,
  ]);
}

/** A table of keys, one per line, columns aligned; a line saying so when there are none. */
export function formatKeyTable(keys: readonly ApiKey[]): string {
  if (keys.length === 0) return 'no keys\n';
  const header = ['ID', 'NAME', 'ENV', 'KEY', 'STATUS', 'SCOPES', 'IP WHITELIST', 'LAST USED'];
  const rows = keys.map((key) => [
    key.id,
    key.name,
    environmentName(key.environment),
    key.display,
    keyStatus(key),
    key.scopes.join(','),
    key.ipWhitelist.length === 0 ? 'any' : key.ipWhitelist.join(','),
    key.lastUsedAt === undefined ? 'never' : time(key.lastUsedAt, ''),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] as string).length)));
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd()).join('\n') + '\n';
}

/**
 * A key as JSON for scripts: proto3 JSON names and values (enums by name,
 * 64-bit counts as strings, times in RFC 3339), every field present (null
 * for an unset time).
 */
export function apiKeyJson(key: ApiKey): Record<string, unknown> {
  return {
    id: key.id,
    accountId: key.accountId,
    name: key.name,
    environment: environmentToJSON(key.environment),
    display: key.display,
    status: keyStatus(key),
    scopes: key.scopes,
    ipWhitelist: key.ipWhitelist,
    createdAt: key.createdAt?.toISOString() ?? null,
    revokedAt: key.revokedAt?.toISOString() ?? null,
    disabledAt: key.disabledAt?.toISOString() ?? null,
    expiresAt: key.expiresAt?.toISOString() ?? null,
    lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
    lastUsedIp: key.lastUsedIp,
    requestCount: String(key.requestCount),
    refusedCount: String(key.refusedCount),
    metadata: key.metadata,
    rotatedFromKeyId: key.rotatedFromKeyId === '' ? null : key.rotatedFromKeyId,
    replacedByKeyId: key.replacedByKeyId === '' ? null : key.replacedByKeyId,
  };
}

/** A Verify answer as JSON, every field present, with the reason in words. */
export function verifyJson(response: VerifyResponse): Record<string, unknown> {
  return {
    valid: response.valid,
    code: verifyCodeToJSON(response.code),
    httpStatus: response.httpStatus,
    reason: verdictReason(response),
    keyId: response.keyId,
    accountId: response.accountId,
    environment: environmentToJSON(response.environment),
    keyName: response.keyName,
    scopes: response.scopes,
    missingScopes: response.missingScopes,
    metadata: response.metadata,
  };
}

/** A Verify answer for a person: the verdict, the HTTP status and why, then the key it identified. */
export function formatVerdict(response: VerifyResponse): string {
  const rows: Array<readonly [string, string]> = [
    ['verdict', response.valid ? 'valid' : 'refused'],
    ['http status', String(response.httpStatus)],
    ['code', verifyCodeToJSON(response.code)],
    ['why', verdictReason(response)],
  ];
  if (response.keyId !== '') {
    rows.push(
      ['key id', response.keyId],
      ['key name', response.keyName],
      ['account', response.accountId],
      ['environment', environmentName(response.environment)],
      ['scopes', response.scopes.join(' ')],
      ['metadata', formatMetadata(response.metadata)],
    );
  }
  return fields(rows);
}

/** JSON on one line per document, for `--json`. */
export function json(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}
