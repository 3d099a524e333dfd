/**
 * Property-based tests of every RPC with hostile input, over the real wire
 * against a real server process (with Redis). Each property states what the
 * contract allows for any input (README "API", and the limits of the input
 * hardening): success, INVALID_ARGUMENT naming the field, NOT_FOUND or
 * FAILED_PRECONDITION where the README says, RESOURCE_EXHAUSTED over 1 MiB;
 * never INTERNAL or UNKNOWN; a refused admin call stores nothing; no error
 * detail and no log line holds a secret. A failure prints fast-check's seed
 * and path; KEYWARD_PROPERTY_SEED / KEYWARD_PROPERTY_PATH /
 * KEYWARD_PROPERTY_NAME replay it (see test/helpers/hostileInput.ts).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import fc from 'fast-check';
import pg from 'pg';
import {
  type ApiKey,
  CreateKeyRequest,
  CreateKeyResponse,
  DisableKeyRequest,
  DisableKeyResponse,
  EnableKeyRequest,
  EnableKeyResponse,
  Environment,
  GetKeyRequest,
  GetKeyResponse,
  ListKeysRequest,
  ListKeysResponse,
  RevokeKeyRequest,
  RevokeKeyResponse,
  RotateKeyRequest,
  RotateKeyResponse,
  UpdateIpWhitelistRequest,
  UpdateIpWhitelistResponse,
  UpdateKeyRequest,
  UpdateKeyResponse,
  UpdateScopesRequest,
  UpdateScopesResponse,
  VerifyCode,
  VerifyRequest,
  VerifyResponse,
  VerifyStreamRequest,
  VerifyStreamResponse,
  verifyCodeToJSON,
} from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient, secretsSeen } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId, testDatabaseUrl, testRedisUrl } from './helpers/env';
import {
  CONTROL,
  MARKUP,
  ODD,
  type Outcome,
  RawClient,
  SCOPES,
  SPECIAL_STRINGS,
  type TimestampSpec,
  YEAR_10000_SECONDS,
  allowedFrom,
  aroundLimits,
  bytesField,
  checkProperty,
  classifyClientIp,
  classifyEntry,
  clientIp,
  concatBytes,
  forgedPageToken,
  hostileList,
  hostileText,
  invalidUtf8,
  ipv4,
  ipv6,
  isCanonicalEntry,
  keyIdText,
  lengthClass,
  malformedBytes,
  repeatedText,
  scopeText,
  secretLike,
  summarize,
  timestampField,
  timestampSpec,
  uuidClass,
  varintField,
  wellFormedSecret,
  whitelistEntry,
} from './helpers/hostileInput';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics, waitForMetric } from './helpers/metrics';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

const MiB = 1 << 20;
const ADMIN_PATH = '/keyward.v1.KeyAdminService/';
const VERIFY_PATH = '/keyward.v1.KeyVerifierService/Verify';
const STREAM_PATH = '/keyward.v1.KeyVerifierService/VerifyStream';
const CATALOG: ReadonlySet<string> = new Set(SCOPES);
const CANONICAL_CLIENT_IP = '198.51.100.7';

// ---------------------------------------------------------------------------
// Secrets: none may be echoed in an error or written to a log
// ---------------------------------------------------------------------------

/** Every secret this file created. */
const secrets = new Set<string>();

function remember(secret: string): void {
  secrets.add(secret);
  secretsSeen.add(secret);
}

/** The created secret whose 49-character body (hence the secret too) is in `text`, if any. */
function leakIn(text: string): string | undefined {
  for (const secret of secrets) if (text.includes(secret.slice(9))) return secret;
  return undefined;
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/** A keyward process with Redis (a prefix of its own), metrics and a 50 ms usage flush, trusting its caches. */
async function startServer(): Promise<ServerProcess> {
  const server = await ServerProcess.start({
    REDIS_URL: testRedisUrl(),
    KEYWARD_REDIS_PREFIX: `t-${randomUUID()}:`,
    KEYWARD_METRICS_ADDR: '127.0.0.1:0',
    KEYWARD_USAGE_FLUSH_MS: '50',
    // This file tests what input gets, not time limits: a lookup on a loaded machine must not turn UNAVAILABLE.
    KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000',
  });
  await waitForMetric(server.metricsPort as number, (metrics) => metrics.get('keyward_cache_trusted') === 1, 20_000);
  return server;
}

/** SIGTERM, and SIGKILL when the process has not exited after `graceMs` (a server whose event loop is blocked cannot stop). */
async function stopServer(server: ServerProcess, graceMs = 10_000): Promise<number | null> {
  const stopped = server.stop();
  const timer = setTimeout(() => server.signal('SIGKILL'), graceMs);
  try {
    return await stopped;
  } finally {
    clearTimeout(timer);
  }
}

const statusName = (code: status): string => status[code] ?? String(code);
const codeName = (code: VerifyCode): string => verifyCodeToJSON(code);

/** GetKey until request_count reaches `count` (the usage flush runs every 50 ms); the last key read. */
async function waitForUses(admin: AdminClient, accountId: string, keyId: string, count: bigint, timeoutMs = 1_500): Promise<ApiKey | undefined> {
  let key: ApiKey | undefined;
  await waitUntil(
    `request_count ${count}`,
    async () => {
      key = (await admin.getKey({ accountId, keyId })).key;
      return (key?.requestCount ?? 0n) >= count;
    },
    { timeoutMs, intervalMs: 25 },
  ).catch(() => undefined);
  return key;
}

// ---------------------------------------------------------------------------
// The oracle: what the contract allows for a request
// ---------------------------------------------------------------------------

/** The fields an INVALID_ARGUMENT may name, in the form `field` or `field[i]`. */
const FIELD =
  /(?<![A-Za-z0-9_])(?:(metadata)(?:\[""\])?(?![A-Za-z0-9_])|(account_id|name|environment|scopes|ip_whitelist|expires_at|key_id|update_mask\.paths|update_mask|grace_period|page_token|page_size|include_revoked|key|client_ip|required_scopes|request_id)(\[\d+\])?(?![A-Za-z0-9_[]))/;

/** The field an error's details name first, once the quoted values (the caller's own text) are taken out. */
function namedField(details: string): string | undefined {
  const match = FIELD.exec(details.replace(/"(?:[^"\\]|\\.)*"/g, '""'));
  if (!match) return undefined;
  return match[1] ?? (match[2] as string) + (match[3] ?? '');
}

/** The method each request message belongs to. */
const MESSAGE_METHOD: Record<string, string> = {
  CreateKeyRequest: 'keyward.v1.KeyAdminService/CreateKey',
  GetKeyRequest: 'keyward.v1.KeyAdminService/GetKey',
  ListKeysRequest: 'keyward.v1.KeyAdminService/ListKeys',
  UpdateScopesRequest: 'keyward.v1.KeyAdminService/UpdateScopes',
  UpdateIpWhitelistRequest: 'keyward.v1.KeyAdminService/UpdateIpWhitelist',
  RevokeKeyRequest: 'keyward.v1.KeyAdminService/RevokeKey',
  UpdateKeyRequest: 'keyward.v1.KeyAdminService/UpdateKey',
  DisableKeyRequest: 'keyward.v1.KeyAdminService/DisableKey',
  EnableKeyRequest: 'keyward.v1.KeyAdminService/EnableKey',
  RotateKeyRequest: 'keyward.v1.KeyAdminService/RotateKey',
  VerifyRequest: 'keyward.v1.KeyVerifierService/Verify',
  VerifyStreamRequest: 'keyward.v1.KeyVerifierService/VerifyStream',
};

/** Whether the details name the request message (`CreateKeyRequest`), or its method's full path, which names it as surely. */
function namesMessage(details: string, message: string): boolean {
  if (new RegExp(`(^|[^A-Za-z0-9_])(keyward\\.v1\\.)?${message}([^A-Za-z0-9_]|$)`).test(details)) return true;
  const method = MESSAGE_METHOD[message];
  return method !== undefined && new RegExp(`${method.replaceAll('.', '\\.')}([^A-Za-z0-9_]|$)`).test(details);
}

const MESSAGE_FIELDS: Record<string, readonly string[]> = {
  CreateKeyRequest: ['account_id', 'name', 'environment', 'scopes', 'ip_whitelist', 'expires_at', 'metadata'],
  GetKeyRequest: ['account_id', 'key_id'],
  ListKeysRequest: ['account_id', 'include_revoked', 'page_size', 'page_token'],
  UpdateScopesRequest: ['account_id', 'key_id', 'scopes'],
  UpdateIpWhitelistRequest: ['account_id', 'key_id', 'ip_whitelist'],
  RevokeKeyRequest: ['account_id', 'key_id'],
  UpdateKeyRequest: ['account_id', 'key_id', 'name', 'expires_at', 'metadata', 'update_mask', 'update_mask.paths'],
  DisableKeyRequest: ['account_id', 'key_id'],
  EnableKeyRequest: ['account_id', 'key_id'],
  RotateKeyRequest: ['account_id', 'key_id', 'grace_period'],
  VerifyRequest: ['key', 'client_ip', 'required_scopes'],
  VerifyStreamRequest: ['request_id', 'key', 'client_ip', 'required_scopes'],
};

/** What may answer one request. */
interface Expect {
  /** The request message's name (what a malformed message's error must name). */
  readonly message: string;
  /** Over the 1 MiB receive limit: RESOURCE_EXHAUSTED. */
  readonly tooLarge: boolean;
  /** The bytes are not a message: INVALID_ARGUMENT naming the request message. */
  readonly malformed: boolean;
  /** Fields the request surely violates: INVALID_ARGUMENT naming one of these (or a `maybe`). */
  readonly invalid: Set<string>;
  /** Fields the contract leaves open: refusing them is fine, so is accepting. */
  readonly maybe: Set<string>;
  /** The answers allowed when no field is violated. */
  states: Set<status>;
  /** INVALID_ARGUMENT naming the request message is fine too (invalid UTF-8). */
  lenientMessage: boolean;
  /** Bytes not built from a request: INVALID_ARGUMENT may name any field of the message. */
  anyField: boolean;
}

function newExpect(message: string, tooLarge: boolean, malformed = false): Expect {
  return { message, tooLarge, malformed, invalid: new Set(), maybe: new Set(), states: new Set([status.OK]), lenientMessage: false, anyField: false };
}

function listFields(fields: readonly string[]): string {
  return fields.length <= 6 ? fields.join(', ') : `${fields.slice(0, 6).join(', ')}, … (${fields.length} fields)`;
}

/** What is wrong with an answer (undefined: it is one the contract allows). */
function judge(e: Expect, outcome: { readonly code: status; readonly details: string }): string | undefined {
  const { code, details } = outcome;
  const got = `${statusName(code)} ${summarize(details)}`;
  if (leakIn(details) !== undefined) return `the error details echo a secret this test created: ${got}`;
  if (code === status.INTERNAL || code === status.UNKNOWN) return `got ${got}`;
  if (e.tooLarge) return code === status.RESOURCE_EXHAUSTED ? undefined : `a request message over 1 MiB must be RESOURCE_EXHAUSTED; got ${got}`;
  if (code === status.RESOURCE_EXHAUSTED) return `RESOURCE_EXHAUSTED for a request message under 1 MiB: ${got}`;
  if (e.malformed) {
    return code === status.INVALID_ARGUMENT && namesMessage(details, e.message) ? undefined : `a malformed ${e.message} must be INVALID_ARGUMENT naming ${e.message}; got ${got}`;
  }
  if (code === status.INVALID_ARGUMENT) {
    const named = namedField(details);
    if (named !== undefined && (e.invalid.has(named) || e.maybe.has(named))) return undefined;
    if (named !== undefined && e.anyField && (MESSAGE_FIELDS[e.message] ?? []).includes(named.replace(/\[\d+\]$/, ''))) return undefined;
    if ((e.lenientMessage || e.anyField) && namesMessage(details, e.message)) return undefined;
    const wanted = [...e.invalid, ...e.maybe];
    if (wanted.length === 0 && !e.anyField) return `INVALID_ARGUMENT for a request the contract accepts (expected ${[...e.states].map(statusName).join(' or ')}): ${got}`;
    return `INVALID_ARGUMENT must name ${e.anyField ? `a field of ${e.message}` : listFields(wanted)}; it names ${named ?? 'no field'}: ${got}`;
  }
  if (e.invalid.size > 0) return `expected INVALID_ARGUMENT naming ${listFields([...e.invalid])}; got ${got}`;
  if (!e.states.has(code)) return `expected ${[...e.states].map(statusName).join(' or ')}; got ${got}`;
  return undefined;
}

/**
 * metadata (README "Limits"): at most 16 entries, keys ^[a-z][a-z0-9_.-]{0,39}$,
 * values at most 256 characters without control characters, at most 2048
 * bytes of keys and values in all. Exact: the server reads the same decoded strings.
 */
function checkMetadata(e: Expect, metadata: Readonly<Record<string, string>>): void {
  const entries = Object.entries(metadata);
  let bytes = 0;
  for (const [key, value] of entries) bytes += Buffer.byteLength(key) + Buffer.byteLength(value);
  const bad =
    entries.length > 16 ||
    bytes > 2_048 ||
    entries.some(([key, value]) => !/^[a-z][a-z0-9_.-]{0,39}$/.test(key) || value.length > 256 || /[\u0000-\u001f\u007f-\u009f]/.test(value));
  if (bad) e.invalid.add('metadata');
}

/** UpdateKey: the update mask (at least one of name, expires_at, metadata, each once), then the values of the paths it names. */
function checkUpdate(e: Expect, view: AdminView): void {
  const mask = view.updateMask ?? [];
  if (mask.length === 0) {
    e.invalid.add('update_mask');
    return;
  }
  const seen = new Set<string>();
  mask.forEach((path, index) => {
    if (!['name', 'expires_at', 'metadata'].includes(path) || seen.has(path)) e.invalid.add(`update_mask.paths[${index}]`);
    seen.add(path);
  });
  if (e.invalid.size > 0) return;
  if (seen.has('name')) checkName(e, view.name ?? '');
  if (seen.has('metadata')) checkMetadata(e, view.metadata ?? {});
  const expires = view.expiresAt?.getTime();
  if (seen.has('expires_at') && expires !== undefined) {
    if (expires <= Date.now() - 2_000) e.invalid.add('expires_at');
    else if (expires <= Date.now() + 2_000) e.maybe.add('expires_at');
  }
}

/** RotateKey's grace_period: a valid Duration (nanos within ±999999999, of the sign of seconds), not negative, at most 30 days. */
function checkGrace(e: Expect, grace: AdminView['gracePeriod']): void {
  if (grace === undefined) return;
  const { seconds, nanos } = grace;
  const valid = nanos > -1_000_000_000 && nanos < 1_000_000_000 && !(seconds > 0n && nanos < 0) && !(seconds < 0n && nanos > 0);
  const micros = seconds * 1_000_000n + BigInt(Math.trunc(nanos / 1_000));
  if (!valid || seconds < 0n || nanos < 0 || micros > 2_592_000_000_000n) e.invalid.add('grace_period');
}

/** Whether UpdateKey would move the grace end of a key replaced by a rotation later, or clear it (FAILED_PRECONDITION). */
function extendsGrace(row: Row, view: AdminView): boolean {
  if (row.replaced_by_key_id === null || !(view.updateMask ?? []).includes('expires_at')) return false;
  const wanted = view.expiresAt?.getTime();
  return wanted === undefined || row.expires_at === null || wanted > row.expires_at.getTime();
}

/** account_id: 1 to 128 characters, no control characters or surrounding spaces. */
function checkAccount(e: Expect, accountId: string): void {
  const length = lengthClass(accountId, 1, 128);
  const asciiTrimmed = accountId.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '');
  if (length === 'bad' || CONTROL.test(accountId) || asciiTrimmed !== accountId) e.invalid.add('account_id');
  else if (length === 'maybe' || ODD.test(accountId) || accountId.trim() !== accountId) e.maybe.add('account_id');
}

/** name: 1 to 200 characters after trimming, no control characters. */
function checkName(e: Expect, name: string): void {
  const trimmed = name.trim();
  const length = lengthClass(trimmed, 1, 200);
  if (length === 'bad' || CONTROL.test(trimmed)) e.invalid.add('name');
  else if (length === 'maybe' || ODD.test(trimmed)) e.maybe.add('name');
}

function checkKeyId(e: Expect, keyId: string): void {
  const kind = uuidClass(keyId);
  if (kind === 'bad') e.invalid.add('key_id');
  else if (kind === 'maybe') e.maybe.add('key_id');
}

/** scopes: `min` to 64 entries, each in the catalog (case-sensitive). */
function checkScopes(e: Expect, field: string, scopes: readonly string[], min: number): void {
  if (scopes.length < min || scopes.length > 64) e.invalid.add(field);
  scopes.forEach((scope, i) => {
    if (!CATALOG.has(scope)) e.invalid.add(`${field}[${i}]`);
  });
}

/** ip_whitelist: at most 1000 entries, each an address or CIDR range by the contract. */
function checkWhitelist(e: Expect, field: string, entries: readonly string[]): void {
  if (entries.length > 1_000) e.invalid.add(field);
  const seen = new Map<string, string>();
  entries.forEach((entry, i) => {
    let label = seen.get(entry);
    if (label === undefined) seen.set(entry, (label = classifyEntry(entry).label));
    if (label === 'invalid') e.invalid.add(`${field}[${i}]`);
    else if (label === 'maybe') e.maybe.add(`${field}[${i}]`);
  });
}

/** expires_at: nanos within 0..999,999,999, in the future, before the year 10000. */
function checkExpires(e: Expect, expires: { readonly seconds: bigint; readonly nanos: number } | undefined): void {
  if (expires === undefined) return;
  const { seconds, nanos } = expires;
  if (nanos < 0 || nanos > 999_999_999 || seconds >= YEAR_10000_SECONDS) {
    e.invalid.add('expires_at');
    return;
  }
  // The server reads expires_at to the millisecond, rounding down (never up into the year 10000).
  const ms = Number(seconds) * 1_000 + Math.floor(nanos / 1e6);
  if (ms <= Date.now() - 2_000) e.invalid.add('expires_at');
  else if (ms <= Date.now() + 2_000) e.maybe.add('expires_at');
}

/** Page tokens ListKeys issued in this file, with the query each belongs to. */
const issuedTokens = new Map<string, { readonly accountId: string; readonly includeRevoked: boolean }>();

/** A forged token shaped exactly like an issued one for this query (a server without signed tokens cannot tell). */
function looksIssued(token: string, accountId: string, includeRevoked: boolean): boolean {
  for (const encoding of ['base64url', 'base64'] as const) {
    try {
      const cursor = JSON.parse(Buffer.from(token, encoding).toString('utf8')) as { v?: unknown; a?: unknown; r?: unknown; s?: unknown };
      if (
        cursor?.v === 1 &&
        cursor.a === accountId &&
        cursor.r === includeRevoked &&
        typeof cursor.s === 'string' &&
        /^\d{1,19}$/.test(cursor.s) &&
        BigInt(cursor.s) <= 2n ** 63n - 1n
      ) {
        return true;
      }
    } catch {
      // not JSON
    }
  }
  return false;
}

/** page_token: at most 512 characters and only what ListKeys issued for this account_id and include_revoked. */
function checkPageToken(e: Expect, token: string, accountId: string, includeRevoked: boolean): void {
  if (token === '') return;
  const length = lengthClass(token, 0, 512);
  if (length === 'bad') {
    e.invalid.add('page_token');
    return;
  }
  const issued = issuedTokens.get(token);
  if (issued !== undefined) {
    if (issued.accountId !== accountId || issued.includeRevoked !== includeRevoked) e.invalid.add('page_token');
    else if (length === 'maybe') e.maybe.add('page_token');
    return;
  }
  if (looksIssued(token, accountId, includeRevoked)) e.maybe.add('page_token');
  else e.invalid.add('page_token');
}

function normaliseScopes(scopes: readonly string[]): string[] {
  return SCOPES.filter((scope) => scopes.includes(scope));
}

/** What is wrong with a stored whitelist, given the entries asked for (undefined: nothing). */
function whitelistProblem(stored: readonly string[], asked: readonly string[]): string | undefined {
  const nonCanonical = stored.filter((entry) => !isCanonicalEntry(entry));
  if (nonCanonical.length > 0) return `stored whitelist entries not in normal form: ${summarize(nonCanonical)}`;
  if (new Set(stored).size !== stored.length) return `stored whitelist holds duplicates: ${summarize(stored)}`;
  const classes = asked.map(classifyEntry);
  const valid = [...new Set(classes.flatMap((entry) => (entry.label === 'valid' ? [entry.canonical] : [])))];
  if (classes.some((entry) => entry.label === 'maybe')) {
    const missing = valid.filter((entry) => !stored.includes(entry));
    return missing.length > 0 ? `stored whitelist ${summarize(stored)} lacks ${summarize(missing)}` : undefined;
  }
  return JSON.stringify(stored) === JSON.stringify(valid) ? undefined : `stored whitelist ${summarize(stored)}; expected ${summarize(valid)}`;
}

// ---------------------------------------------------------------------------
// The database: a refused admin call stores nothing
// ---------------------------------------------------------------------------

interface Row {
  readonly id: string;
  readonly account_id: string;
  readonly name: string;
  readonly scopes: string[];
  readonly ip_whitelist: string[];
  readonly environment: string;
  readonly revoked_at: Date | null;
  readonly disabled_at: Date | null;
  readonly replaced_by_key_id: string | null;
  readonly expires_at: Date | null;
  readonly metadata: Record<string, string>;
  readonly version: string;
  readonly updated_at: Date;
}

interface Snapshot {
  /** Keys of the request's account_id (CreateKey). */
  readonly count?: number;
  /** The row of the key the request's key_id names or contains. */
  readonly row?: Row;
}

const UUID_INSIDE = /[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/;

// ---------------------------------------------------------------------------
// Admin RPCs
// ---------------------------------------------------------------------------

type AdminRpc = 'CreateKey' | 'GetKey' | 'ListKeys' | 'UpdateScopes' | 'UpdateIpWhitelist' | 'RevokeKey' | 'UpdateKey' | 'DisableKey' | 'EnableKey' | 'RotateKey';

/** The fields of any admin request, as the server decodes them. */
interface AdminView {
  readonly accountId: string;
  readonly keyId?: string;
  readonly name?: string;
  readonly environment?: number;
  readonly scopes?: string[];
  readonly ipWhitelist?: string[];
  readonly metadata?: Record<string, string>;
  readonly expiresAt?: Date | undefined;
  readonly updateMask?: string[] | undefined;
  readonly includeRevoked?: boolean;
  readonly pageSize?: number;
  readonly pageToken?: string;
  readonly gracePeriod?: { readonly seconds: bigint; readonly nanos: number } | undefined;
}

interface AdminResponse {
  readonly key?: ApiKey;
  readonly secret?: string;
  readonly keys?: ApiKey[];
  readonly nextPageToken?: string;
}

const ADMIN: Record<AdminRpc, { readonly message: string; decode(bytes: Uint8Array): AdminView; response(bytes: Uint8Array): AdminResponse }> = {
  UpdateKey: { message: 'UpdateKeyRequest', decode: (b) => UpdateKeyRequest.decode(b), response: (b) => UpdateKeyResponse.decode(b) },
  CreateKey: { message: 'CreateKeyRequest', decode: (b) => CreateKeyRequest.decode(b), response: (b) => CreateKeyResponse.decode(b) },
  GetKey: { message: 'GetKeyRequest', decode: (b) => GetKeyRequest.decode(b), response: (b) => GetKeyResponse.decode(b) },
  ListKeys: { message: 'ListKeysRequest', decode: (b) => ListKeysRequest.decode(b), response: (b) => ListKeysResponse.decode(b) },
  UpdateScopes: { message: 'UpdateScopesRequest', decode: (b) => UpdateScopesRequest.decode(b), response: (b) => UpdateScopesResponse.decode(b) },
  UpdateIpWhitelist: {
    message: 'UpdateIpWhitelistRequest',
    decode: (b) => UpdateIpWhitelistRequest.decode(b),
    response: (b) => UpdateIpWhitelistResponse.decode(b),
  },
  RevokeKey: { message: 'RevokeKeyRequest', decode: (b) => RevokeKeyRequest.decode(b), response: (b) => RevokeKeyResponse.decode(b) },
  DisableKey: { message: 'DisableKeyRequest', decode: (b) => DisableKeyRequest.decode(b), response: (b) => DisableKeyResponse.decode(b) },
  EnableKey: { message: 'EnableKeyRequest', decode: (b) => EnableKeyRequest.decode(b), response: (b) => EnableKeyResponse.decode(b) },
  RotateKey: { message: 'RotateKeyRequest', decode: (b) => RotateKeyRequest.decode(b), response: (b) => RotateKeyResponse.decode(b) },
};

interface AdminCase {
  readonly rpc: AdminRpc;
  readonly bytes: Uint8Array;
  /** The expires_at put on the wire (CreateKey). */
  readonly expires?: { readonly seconds: bigint; readonly nanos: number };
  /** Fields holding invalid UTF-8: refusing them, naming the field or the message, is fine too. */
  readonly lenient?: readonly string[];
  /** Bytes not built from a request (malformed-protobuf property). */
  readonly random?: boolean;
}

// ---------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------

interface KnownKey {
  readonly id: string;
  readonly accountId: string;
  readonly secret: string;
  readonly environment: Environment;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly whitelist: readonly string[];
  readonly state: 'active' | 'revoked' | 'expired';
}

interface VerifyView {
  readonly key: string;
  readonly clientIp: string;
  readonly requiredScopes: readonly string[];
}

interface VerifyExpect {
  readonly e: Expect;
  /** Verdicts allowed when the call is answered. */
  readonly codes: ReadonlySet<VerifyCode>;
  readonly known?: KnownKey;
  readonly missing: readonly string[];
  /** request_id values allowed in the response (VerifyStream). */
  readonly ids?: ReadonlySet<string>;
  /** Random bytes: the verdict is not checked. */
  readonly random?: boolean;
  /** A key the properties change: any verdict of an identified key will do. */
  readonly volatile?: boolean;
}

const HTTP_STATUS: Record<number, number> = {
  [VerifyCode.VERIFY_CODE_OK]: 200,
  [VerifyCode.VERIFY_CODE_MISSING_KEY]: 401,
  [VerifyCode.VERIFY_CODE_INVALID_KEY]: 401,
  [VerifyCode.VERIFY_CODE_REVOKED]: 401,
  [VerifyCode.VERIFY_CODE_EXPIRED]: 401,
  [VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED]: 403,
  [VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE]: 403,
};

function verdictProblem(x: VerifyExpect, answer: VerifyResponse | undefined): string | undefined {
  if (x.random) return undefined;
  if (answer === undefined) return 'no answer';
  const got = `${codeName(answer.code)} ${answer.httpStatus}`;
  if (!x.codes.has(answer.code)) return `expected ${[...x.codes].map(codeName).join(' or ')}; got ${got}`;
  if (answer.httpStatus !== HTTP_STATUS[answer.code] || answer.valid !== (answer.code === VerifyCode.VERIFY_CODE_OK)) return `inconsistent answer ${got} valid=${answer.valid}`;
  const identified = answer.code !== VerifyCode.VERIFY_CODE_MISSING_KEY && answer.code !== VerifyCode.VERIFY_CODE_INVALID_KEY;
  if (!identified) return answer.keyId === '' && answer.accountId === '' ? undefined : `an unidentified key's answer names key ${answer.keyId}`;
  const k = x.known;
  if (x.volatile) return answer.keyId !== '' ? undefined : 'an identified key without key_id';
  if (k === undefined) return `identified a key the test does not know: ${answer.keyId}`;
  if (answer.keyId !== k.id || answer.accountId !== k.accountId || answer.environment !== k.environment || answer.keyName !== k.name) {
    return `answer names ${summarize({ keyId: answer.keyId, accountId: answer.accountId, environment: answer.environment, keyName: answer.keyName })}; expected key ${k.id}`;
  }
  if (JSON.stringify(answer.scopes) !== JSON.stringify(k.scopes)) return `scopes ${summarize(answer.scopes)}; expected ${summarize(k.scopes)}`;
  const missing = answer.code === VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE ? [...x.missing].sort() : [];
  if (JSON.stringify([...answer.missingScopes].sort()) !== JSON.stringify(missing)) return `missing_scopes ${summarize(answer.missingScopes)}; expected ${summarize(missing)}`;
  return undefined;
}

// ---------------------------------------------------------------------------
// The harness: one server, clients, the database, the keys the properties use
// ---------------------------------------------------------------------------

class Harness {
  readonly admin: AdminClient;
  readonly rawAdmin: RawClient;
  readonly verifier: RawClient;
  readonly db: pg.Pool;
  /** Keys whose state the properties never change: Verify's verdict for them is known. */
  readonly keysBySecret = new Map<string, KnownKey>();
  /** Answers by RPC and code (printed with KEYWARD_PROPERTY_DEBUG=1, to see what the properties reach). */
  readonly tally = new Map<string, number>();
  /** Keys the admin properties change (scopes, whitelist, revocation). */
  readonly volatileSecrets = new Set<string>();
  home = `acct-hostile-${randomUUID()}`;
  other = newAccountId();
  keys: Record<'open' | 'white' | 'revoked' | 'expired' | 'scopes' | 'ips' | 'usage' | 'other' | 'other2', KnownKey> = {} as never;

  constructor(
    readonly server: ServerProcess,
    /** Deadline of each call: a server that does not answer in time fails the property. */
    readonly deadlineMs = 20_000,
  ) {
    this.admin = new AdminClient(server.address);
    this.rawAdmin = new RawClient(server.address, ADMIN_TOKEN);
    this.verifier = new RawClient(server.address);
    this.db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 2 });
  }

  /** The secrets the arbitraries draw on. */
  get pool(): string[] {
    return Object.values(this.keys).map((key) => key.secret);
  }

  async create(
    name: keyof Harness['keys'],
    accountId: string,
    request: { environment?: Environment; scopes?: string[]; ipWhitelist?: string[]; expiresAt?: Date },
    state: KnownKey['state'] = 'active',
  ): Promise<void> {
    const environment = request.environment ?? Environment.ENVIRONMENT_LIVE;
    const scopes = request.scopes ?? ['jobs:read'];
    const { key, secret } = await this.admin.createKey({ accountId, name: `${name} key`, environment, scopes, ipWhitelist: request.ipWhitelist ?? [], expiresAt: request.expiresAt });
    remember(secret);
    const known: KnownKey = {
      id: key?.id as string,
      accountId,
      secret,
      environment,
      name: `${name} key`,
      scopes: key?.scopes ?? [],
      whitelist: key?.ipWhitelist ?? [],
      state,
    };
    this.keys[name] = known;
    // Keys the admin properties change have no fixed verdict: Verify may answer any verdict of an identified key for them.
    if (['scopes', 'ips', 'other', 'other2'].includes(name)) this.volatileSecrets.add(secret);
    else this.keysBySecret.set(secret, known);
  }

  async setUp(): Promise<void> {
    await this.create('open', this.home, { scopes: ['jobs:read', 'customers:read', 'technicians:read'] });
    await this.create('white', this.home, {
      environment: Environment.ENVIRONMENT_TEST,
      scopes: ['jobs:read', 'assets:read'],
      ipWhitelist: ['203.0.113.0/24', '2001:db8::/32'],
    });
    await this.create('revoked', this.home, {}, 'revoked');
    await this.admin.revokeKey({ accountId: this.home, keyId: this.keys.revoked.id });
    const expiresAt = new Date(Date.now() + 1_000);
    await this.create('expired', this.home, { expiresAt }, 'expired');
    await this.create('scopes', this.home, {});
    await this.create('ips', this.home, { ipWhitelist: ['10.0.0.0/8'] });
    await this.create('usage', this.home, {});
    await this.create('other', this.other, {});
    await this.create('other2', this.other, {});
    for (const [accountId, includeRevoked] of [
      [this.home, false],
      [this.home, true],
      [this.other, false],
    ] as const) {
      const { nextPageToken } = await this.admin.listKeys({ accountId, includeRevoked, pageSize: 1 });
      issuedTokens.set(nextPageToken, { accountId, includeRevoked });
    }
    // Time itself is the condition here: the key must be past its expires_at.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt.getTime() + 50 - Date.now())));
  }

  count(what: string): void {
    this.tally.set(what, (this.tally.get(what) ?? 0) + 1);
  }

  close(): void {
    if (process.env.KEYWARD_PROPERTY_DEBUG) console.log([...this.tally].sort().map(([what, n]) => `${what}: ${n}`).join('\n'));
    this.tally.clear();
    this.admin.close();
    this.rawAdmin.close();
    this.verifier.close();
  }

  // --- database ------------------------------------------------------------

  async countKeys(accountId: string): Promise<number | undefined> {
    if (accountId.includes('\u0000')) return undefined; // PostgreSQL text cannot hold it: nothing can be stored under it
    const { rows } = await this.db.query<{ n: string }>('select count(*) as n from keyward.api_keys where account_id = $1', [accountId]);
    return Number(rows[0]?.n);
  }

  async row(keyIdText: string): Promise<Row | undefined> {
    const id = UUID_INSIDE.exec(keyIdText)?.[0]?.toLowerCase();
    if (id === undefined) return undefined;
    const { rows } = await this.db.query<Row>(
      `select id::text, account_id, name, scopes, ip_whitelist, environment, revoked_at, disabled_at, replaced_by_key_id::text, expires_at, metadata,
              version::text, updated_at
         from keyward.api_keys where id = $1::uuid`,
      [id],
    );
    return rows[0];
  }

  async snapshot(rpc: AdminRpc, view: AdminView): Promise<Snapshot> {
    if (rpc === 'CreateKey') return { count: await this.countKeys(view.accountId) };
    if (rpc === 'ListKeys') return {};
    // RotateKey creates a key in the account too.
    if (rpc === 'RotateKey') return { row: await this.row(view.keyId ?? ''), count: await this.countKeys(view.accountId) };
    return { row: await this.row(view.keyId ?? '') };
  }

  // --- admin ---------------------------------------------------------------

  expectAdmin(c: AdminCase, view: AdminView, before: Snapshot): Expect {
    const message = ADMIN[c.rpc].message;
    const e = newExpect(message, c.bytes.length > MiB);
    if (c.random) {
      e.anyField = true;
      e.states = new Set([status.OK, status.NOT_FOUND, status.FAILED_PRECONDITION]);
      return e;
    }
    checkAccount(e, view.accountId);
    switch (c.rpc) {
      case 'CreateKey':
        checkName(e, view.name ?? '');
        if (view.environment !== Environment.ENVIRONMENT_LIVE && view.environment !== Environment.ENVIRONMENT_TEST) e.invalid.add('environment');
        checkScopes(e, 'scopes', view.scopes ?? [], 1);
        checkWhitelist(e, 'ip_whitelist', view.ipWhitelist ?? []);
        checkExpires(e, c.expires);
        checkMetadata(e, view.metadata ?? {});
        break;
      case 'ListKeys':
        if ((view.pageSize ?? 0) < 0) e.invalid.add('page_size');
        checkPageToken(e, view.pageToken ?? '', view.accountId, view.includeRevoked ?? false);
        break;
      default: {
        const keyId = view.keyId ?? '';
        checkKeyId(e, keyId);
        if (c.rpc === 'UpdateScopes') checkScopes(e, 'scopes', view.scopes ?? [], 1);
        if (c.rpc === 'UpdateIpWhitelist') checkWhitelist(e, 'ip_whitelist', view.ipWhitelist ?? []);
        if (c.rpc === 'UpdateKey') checkUpdate(e, view);
        if (c.rpc === 'RotateKey') checkGrace(e, view.gracePeriod);
        const row = before.row;
        const owned = row !== undefined && row.id === keyId.toLowerCase() && row.account_id === view.accountId;
        // Every RPC here but GetKey and RevokeKey refuses a revoked key; RotateKey a replaced one too.
        const refused =
          owned &&
          ((c.rpc !== 'GetKey' && c.rpc !== 'RevokeKey' && row.revoked_at !== null) ||
            (c.rpc === 'RotateKey' && row.replaced_by_key_id !== null) ||
            (c.rpc === 'UpdateKey' && extendsGrace(row, view)));
        e.states = new Set([!owned ? status.NOT_FOUND : refused ? status.FAILED_PRECONDITION : status.OK]);
        if (uuidClass(keyId) === 'maybe') e.states.add(status.NOT_FOUND);
      }
    }
    for (const field of c.lenient ?? []) e.maybe.add(field);
    if ((c.lenient ?? []).length > 0) e.lenientMessage = true;
    return e;
  }

  /** What is wrong with a successful admin answer, or with the database after it. */
  successProblem(c: AdminCase, view: AdminView, response: AdminResponse, before: Snapshot, after: Snapshot): string | undefined {
    if (c.random) return undefined;
    const key = response.key;
    switch (c.rpc) {
      case 'CreateKey': {
        const secret = response.secret ?? '';
        const prefix = view.environment === Environment.ENVIRONMENT_TEST ? 'fsm_test_' : 'fsm_live_';
        if (!new RegExp(`^${prefix}[0-9A-Za-z]{49}$`).test(secret)) return `secret ${summarize(secret)} is not a ${prefix} key`;
        if (key === undefined) return 'no key in the answer';
        if (key.accountId !== view.accountId) return `account_id ${summarize(key.accountId)}; expected ${summarize(view.accountId)}`;
        if (key.name.trim() !== (view.name ?? '').trim() || key.name.length > 200 || CONTROL.test(key.name)) return `name ${summarize(key.name)} for ${summarize(view.name)}`;
        if (key.environment !== view.environment) return `environment ${key.environment}; expected ${view.environment}`;
        if (JSON.stringify(key.scopes) !== JSON.stringify(normaliseScopes(view.scopes ?? []))) return `scopes ${summarize(key.scopes)} for ${summarize(view.scopes)}`;
        const whitelist = whitelistProblem(key.ipWhitelist, view.ipWhitelist ?? []);
        if (whitelist !== undefined) return whitelist;
        if (c.expires === undefined ? key.expiresAt !== undefined : (key.expiresAt?.getTime() ?? Number.NaN) !== Number(c.expires.seconds) * 1_000 + Math.floor(c.expires.nanos / 1e6)) {
          return `expires_at ${summarize(key.expiresAt)} for ${summarize(c.expires)}`;
        }
        if (key.revokedAt !== undefined || key.requestCount !== 0n) return 'a new key is revoked or used';
        if (!isDeepStrictEqual({ ...key.metadata }, { ...view.metadata })) return `metadata ${summarize(key.metadata)} for ${summarize(view.metadata)}`;
        if (before.count !== undefined && after.count !== before.count + 1) return `the account has ${after.count} keys after the call; ${before.count} before`;
        return undefined;
      }
      case 'GetKey':
        return key?.id === (view.keyId ?? '').toLowerCase() && key.accountId === view.accountId ? undefined : `answered key ${summarize(key?.id)} of ${summarize(key?.accountId)}`;
      case 'ListKeys': {
        const keys = response.keys ?? [];
        const size = view.pageSize ?? 0;
        const limit = size === 0 ? 50 : Math.min(size, 1_000);
        if (keys.length > limit) return `${keys.length} keys on a page of ${limit}`;
        if (keys.some((k) => k.accountId !== view.accountId)) return 'a key of another account is listed';
        if (!view.includeRevoked && keys.some((k) => k.revokedAt !== undefined)) return 'a revoked key is listed without include_revoked';
        const next = response.nextPageToken ?? '';
        if (next.length > 512) return `next_page_token of ${next.length} characters`;
        if (next !== '') issuedTokens.set(next, { accountId: view.accountId, includeRevoked: view.includeRevoked ?? false });
        return undefined;
      }
      case 'UpdateScopes':
        if (JSON.stringify(key?.scopes) !== JSON.stringify(normaliseScopes(view.scopes ?? []))) return `scopes ${summarize(key?.scopes)} for ${summarize(view.scopes)}`;
        if (JSON.stringify(after.row?.scopes) !== JSON.stringify(key?.scopes)) return `stored scopes ${summarize(after.row?.scopes)}`;
        return BigInt(after.row?.version ?? 0) > BigInt(before.row?.version ?? 0) ? undefined : 'the version did not move';
      case 'UpdateIpWhitelist': {
        const problem = whitelistProblem(key?.ipWhitelist ?? [], view.ipWhitelist ?? []);
        if (problem !== undefined) return problem;
        return JSON.stringify(after.row?.ip_whitelist) === JSON.stringify(key?.ipWhitelist) ? undefined : `stored whitelist ${summarize(after.row?.ip_whitelist)}`;
      }
      case 'UpdateKey': {
        const mask = view.updateMask ?? [];
        const row = after.row;
        if (mask.includes('name') && (key?.name !== (view.name ?? '').trim() || row?.name !== key?.name)) return `name ${summarize(key?.name)} for ${summarize(view.name)}`;
        if (!mask.includes('name') && key?.name !== before.row?.name) return 'name changed outside the mask';
        if (mask.includes('metadata') && (!isDeepStrictEqual({ ...key?.metadata }, { ...view.metadata }) || !isDeepStrictEqual({ ...row?.metadata }, { ...view.metadata }))) {
          return `metadata ${summarize(key?.metadata)} for ${summarize(view.metadata)}`;
        }
        if (!mask.includes('metadata') && !isDeepStrictEqual({ ...key?.metadata }, { ...before.row?.metadata })) return 'metadata changed outside the mask';
        const expected = mask.includes('expires_at') ? view.expiresAt?.getTime() : before.row?.expires_at?.getTime();
        if (key?.expiresAt?.getTime() !== expected) return `expires_at ${summarize(key?.expiresAt)}; expected ${summarize(expected)}`;
        return BigInt(row?.version ?? 0) > BigInt(before.row?.version ?? 0) ? undefined : 'the version did not move';
      }
      case 'RevokeKey':
        if (key?.revokedAt === undefined || after.row?.revoked_at === null) return 'the key is not revoked';
        if (before.row?.revoked_at !== null && JSON.stringify(after.row) !== JSON.stringify(before.row)) return 'revoking a revoked key changed it';
        return undefined;
      case 'DisableKey':
      case 'EnableKey': {
        const disabled = c.rpc === 'DisableKey';
        if ((key?.disabledAt !== undefined) !== disabled || (after.row?.disabled_at !== null) !== disabled) return `the key is ${disabled ? 'not disabled' : 'still disabled'}`;
        const already = (before.row?.disabled_at !== null) === disabled;
        if (already && JSON.stringify(after.row) !== JSON.stringify(before.row)) return `${c.rpc} on a key already ${disabled ? 'disabled' : 'enabled'} changed it`;
        if (!already && BigInt(after.row?.version ?? 0) <= BigInt(before.row?.version ?? 0)) return 'the version did not move';
        return undefined;
      }
      case 'RotateKey': {
        const old = before.row as Row;
        const prefix = old.environment === 'test' ? 'fsm_test_' : 'fsm_live_';
        if (!new RegExp(`^${prefix}[0-9A-Za-z]{49}$`).test(response.secret ?? '')) return `secret ${summarize(response.secret)} is not a ${prefix} key`;
        if (key === undefined || key.id === old.id) return `the answer holds key ${summarize(key?.id)}, not a new one`;
        if (key.accountId !== old.account_id || key.name !== old.name || key.rotatedFromKeyId !== old.id) return `the new key ${summarize(key)} is not a copy of ${old.id}`;
        if (JSON.stringify(key.scopes) !== JSON.stringify(old.scopes) || JSON.stringify(key.ipWhitelist) !== JSON.stringify(old.ip_whitelist)) return 'the new key has other scopes or whitelist';
        if (!isDeepStrictEqual({ ...key.metadata }, { ...old.metadata })) return `metadata ${summarize(key.metadata)}; the old key had ${summarize(old.metadata)}`;
        if (after.row?.replaced_by_key_id !== key.id) return `the old key's replaced_by_key_id is ${summarize(after.row?.replaced_by_key_id)}`;
        // As the server counts it: whole microseconds (nanos truncated); 0 revokes at once.
        const graceMicros = (view.gracePeriod?.seconds ?? 0n) * 1_000_000n + BigInt(Math.trunc((view.gracePeriod?.nanos ?? 0) / 1_000));
        const graceMs = Number(graceMicros) / 1_000;
        if (graceMicros === 0n) {
          if (after.row?.revoked_at === null) return 'a grace period of 0 left the old key unrevoked';
        } else {
          const end = after.row?.expires_at?.getTime();
          if (after.row?.revoked_at !== null || end === undefined || end > Date.now() + graceMs || (old.expires_at !== null && end > old.expires_at.getTime())) {
            return `the old key expires at ${summarize(after.row?.expires_at)} (revoked ${summarize(after.row?.revoked_at)}) after a grace of ${graceMs} ms`;
          }
        }
        if (before.count !== undefined && after.count !== before.count + 1) return `the account has ${after.count} keys after the call; ${before.count} before`;
        return undefined;
      }
    }
  }

  /** Sends the case's bytes and checks the answer and the database against the contract; throws what is wrong. */
  async runAdmin(c: AdminCase): Promise<Outcome<AdminResponse>> {
    const codec = ADMIN[c.rpc];
    let view: AdminView | undefined;
    try {
      view = codec.decode(c.bytes);
    } catch {
      view = undefined;
    }
    const before: Snapshot = view === undefined ? {} : await this.snapshot(c.rpc, view);
    const e = view === undefined ? newExpect(codec.message, c.bytes.length > MiB, true) : this.expectAdmin(c, view, before);
    const outcome = await this.rawAdmin.unary(ADMIN_PATH + c.rpc, c.bytes, (bytes) => codec.response(bytes), this.deadlineMs);
    if (outcome.code === status.OK && outcome.response?.secret) remember(outcome.response.secret);
    this.count(`${c.rpc}${c.random ? ' (random bytes)' : c.lenient ? ' (invalid UTF-8)' : ''} ${statusName(outcome.code)} ${outcome.code === status.INVALID_ARGUMENT ? (namedField(outcome.details) ?? '?').replace(/\[\d+\]/, '[i]') : ''}`);
    const what = `${c.rpc} ${view === undefined ? summarize(c.bytes) : summarize(view)} (${c.bytes.length} bytes)`;
    const problem = judge(e, outcome);
    if (problem !== undefined) throw new Error(`${what}: ${problem}`);
    if (view === undefined) return outcome;
    const afterSnapshot = await this.snapshot(c.rpc, view);
    if (outcome.code === status.OK) {
      const wrong = this.successProblem(c, view, outcome.response ?? {}, before, afterSnapshot);
      if (wrong !== undefined) throw new Error(`${what}: answered OK, but ${wrong}`);
    } else if (JSON.stringify(afterSnapshot) !== JSON.stringify(before)) {
      throw new Error(`${what}: refused with ${statusName(outcome.code)}, yet the database changed: ${summarize(before)} → ${summarize(afterSnapshot)}`);
    }
    return outcome;
  }

  // --- Verify and VerifyStream ----------------------------------------------

  expectVerify(view: VerifyView, message: 'VerifyRequest' | 'VerifyStreamRequest', tooLarge: boolean, lenient: readonly string[] = []): VerifyExpect {
    const e = newExpect(message, tooLarge);
    const ipLength = lengthClass(view.clientIp, 0, 64);
    if (ipLength === 'bad') e.invalid.add('client_ip');
    else if (ipLength === 'maybe') e.maybe.add('client_ip');
    if (view.requiredScopes.length > 64) e.invalid.add('required_scopes');
    view.requiredScopes.forEach((scope, i) => {
      if (!CATALOG.has(scope)) {
        e.invalid.add(`required_scopes[${i}]`);
        e.maybe.add('required_scopes');
      }
    });
    for (const field of lenient) e.maybe.add(field);
    if (lenient.length > 0) e.lenientMessage = true;
    const missing = [...new Set(view.requiredScopes.filter((scope) => CATALOG.has(scope)))];
    if (view.key === '') return { e, codes: new Set([VerifyCode.VERIFY_CODE_MISSING_KEY]), missing };
    const known = this.keysBySecret.get(view.key);
    if (known === undefined && this.volatileSecrets.has(view.key)) {
      // Disabled, or expired at the end of a rotation's grace period, as well.
      const identified = [
        VerifyCode.VERIFY_CODE_OK,
        VerifyCode.VERIFY_CODE_REVOKED,
        VerifyCode.VERIFY_CODE_DISABLED,
        VerifyCode.VERIFY_CODE_EXPIRED,
        VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED,
        VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE,
      ];
      return { e, codes: new Set(identified), missing, volatile: true };
    }
    if (known === undefined) return { e, codes: new Set([VerifyCode.VERIFY_CODE_INVALID_KEY]), missing };
    if (known.state === 'revoked') return { e, codes: new Set([VerifyCode.VERIFY_CODE_REVOKED]), known, missing };
    if (known.state === 'expired') return { e, codes: new Set([VerifyCode.VERIFY_CODE_EXPIRED]), known, missing };
    const lacking = missing.filter((scope) => !known.scopes.includes(scope));
    const scopeCode = lacking.length > 0 ? VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE : VerifyCode.VERIFY_CODE_OK;
    const allowed = allowedFrom(known.whitelist, view.clientIp);
    const codes = allowed === 'ok' ? [scopeCode] : allowed === 'bad' ? [VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED] : [scopeCode, VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED];
    return { e, codes: new Set(codes), known, missing: lacking };
  }

  /** Sends one Verify request as bytes and checks the answer. */
  async runVerify(bytes: Uint8Array, options: { lenient?: readonly string[]; random?: boolean } = {}): Promise<void> {
    let view: VerifyRequest | undefined;
    try {
      view = VerifyRequest.decode(bytes);
    } catch {
      view = undefined;
    }
    const tooLarge = bytes.length > MiB;
    let x: VerifyExpect;
    if (view === undefined) x = { e: newExpect('VerifyRequest', tooLarge, true), codes: new Set(), missing: [] };
    else if (options.random) {
      const e = newExpect('VerifyRequest', tooLarge);
      e.anyField = true;
      x = { e, codes: new Set(), missing: [], random: true };
    } else x = this.expectVerify(view, 'VerifyRequest', tooLarge, options.lenient);
    const outcome = await this.verifier.unary(VERIFY_PATH, bytes, (b) => VerifyResponse.decode(b), this.deadlineMs);
    this.count(`Verify ${statusName(outcome.code)} ${outcome.response ? codeName(outcome.response.code) : (namedField(outcome.details) ?? '')}`);
    const problem = judge(x.e, outcome) ?? (outcome.code === status.OK ? verdictProblem(x, outcome.response) : undefined);
    if (problem !== undefined) throw new Error(`Verify ${view === undefined ? summarize(bytes) : summarize(view)} (${bytes.length} bytes): ${problem}`);
  }

  /**
   * Sends the messages on one VerifyStream and checks that each request got
   * exactly one answer the contract allows for it (answers may come in any
   * order: matched by request_id, then by what they say).
   */
  async runStream(messages: readonly Uint8Array[], options: { lenient?: ReadonlyMap<number, readonly string[]>; random?: ReadonlySet<number> } = {}): Promise<void> {
    const views = messages.map((bytes) => {
      try {
        return VerifyStreamRequest.decode(bytes);
      } catch {
        return undefined;
      }
    });
    const expects: VerifyExpect[] = views.map((view, i) => {
      if (view === undefined) return { e: newExpect('VerifyStreamRequest', false, true), codes: new Set(), missing: [], ids: new Set(['']) };
      const lenient = options.lenient?.get(i) ?? [];
      if (options.random?.has(i)) {
        const e = newExpect('VerifyStreamRequest', false);
        e.anyField = true;
        return { e, codes: new Set(), missing: [], ids: new Set(['', view.requestId]), random: true };
      }
      const x = this.expectVerify(view, 'VerifyStreamRequest', false, lenient);
      const idLength = lengthClass(view.requestId, 0, 256);
      if (idLength === 'bad') x.e.invalid.add('request_id');
      else if (idLength === 'maybe') x.e.maybe.add('request_id');
      const ids = new Set(idLength === 'bad' ? [''] : idLength === 'maybe' ? ['', view.requestId] : [view.requestId]);
      if (lenient.includes('request_id')) ids.add('');
      return { ...x, ids };
    });
    const tooLarge = messages.some((bytes) => bytes.length > MiB);
    const malformed = views.some((view) => view === undefined);
    const lenientAny = (options.lenient?.size ?? 0) > 0;
    const result = await this.verifier.bidi(STREAM_PATH, messages, (b) => VerifyStreamResponse.decode(b), this.deadlineMs);
    const what = `VerifyStream ${summarize(views.map((view, i) => view ?? messages[i]))}`;
    const final = `${statusName(result.code)} ${summarize(result.details)}`;
    if (leakIn(result.details) !== undefined) throw new Error(`${what}: the stream's status echoes a secret: ${final}`);
    if (result.code === status.INTERNAL || result.code === status.UNKNOWN) throw new Error(`${what}: the stream ended ${final}`);

    this.count(`VerifyStream stream ${statusName(result.code)}`);
    for (const response of result.responses) {
      this.count(`VerifyStream answer ${response.outcome?.$case === 'result' ? codeName(response.outcome.value.code) : `error ${response.outcome?.value.code}`}`);
    }
    const outcomeOf = (response: VerifyStreamResponse): Outcome<VerifyResponse> | undefined => {
      if (response.outcome?.$case === 'result') return { code: status.OK, details: '', response: response.outcome.value };
      if (response.outcome?.$case === 'error') return { code: response.outcome.value.code as status, details: response.outcome.value.message };
      return undefined;
    };
    const problemFor = (i: number, response: VerifyStreamResponse): string | undefined => {
      const x = expects[i] as VerifyExpect;
      if (!(x.ids ?? new Set()).has(response.requestId)) return `request_id ${summarize(response.requestId)}; expected ${summarize([...(x.ids ?? [])])}`;
      const outcome = outcomeOf(response);
      if (outcome === undefined) return 'an answer with neither result nor error';
      return judge(x.e, outcome) ?? (outcome.code === status.OK ? verdictProblem(x, outcome.response) : undefined);
    };

    let endedEarly = false;
    if (tooLarge) {
      if (result.code !== status.RESOURCE_EXHAUSTED) throw new Error(`${what}: a message over 1 MiB must end the stream with RESOURCE_EXHAUSTED; it ended ${final}`);
      endedEarly = true;
    } else if (result.code !== status.OK) {
      const refusedAsMessage = result.code === status.INVALID_ARGUMENT && namesMessage(result.details, 'VerifyStreamRequest') && (malformed || lenientAny);
      if (!refusedAsMessage) throw new Error(`${what}: the stream ended ${final}`);
      endedEarly = true;
    }
    // Every answer must be one the contract allows for some request; with the stream complete, exactly one per request.
    const candidates = result.responses.map((response) => expects.map((_, i) => problemFor(i, response) === undefined));
    const unexplained = result.responses.findIndex((_, j) => !(candidates[j] as boolean[]).some(Boolean));
    if (unexplained !== -1) {
      const response = result.responses[unexplained] as VerifyStreamResponse;
      const byId = expects.findIndex((x) => (x.ids ?? new Set()).has(response.requestId));
      const why = byId === -1 ? 'no request has its request_id' : `for request ${byId}: ${problemFor(byId, response)}`;
      throw new Error(`${what}: answer ${summarize(response)} fits no request (${why})`);
    }
    if (endedEarly) return;
    if (result.responses.length !== messages.length) throw new Error(`${what}: ${result.responses.length} answers to ${messages.length} requests`);
    // A perfect matching of answers to requests (Kuhn's algorithm; at most a few dozen of each).
    const owner: number[] = Array(messages.length).fill(-1);
    const assign = (j: number, seen: boolean[]): boolean => {
      for (let i = 0; i < messages.length; i++) {
        if (!(candidates[j] as boolean[])[i] || seen[i]) continue;
        seen[i] = true;
        if ((owner[i] as number) === -1 || assign(owner[i] as number, seen)) {
          owner[i] = j;
          return true;
        }
      }
      return false;
    };
    for (let j = 0; j < result.responses.length; j++) {
      if (!assign(j, Array(messages.length).fill(false))) throw new Error(`${what}: the answers ${summarize(result.responses)} cannot be matched one to one with the requests`);
    }
  }
}

// ---------------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------------

/** A string field of a request, by its proto name and number. */
interface Target {
  readonly rpc: AdminRpc | 'Verify' | 'VerifyStream';
  readonly field: string;
  readonly number: number;
  readonly repeated: boolean;
  readonly property: string;
}

const TARGETS: readonly Target[] = [
  { rpc: 'CreateKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'CreateKey', field: 'name', number: 2, repeated: false, property: 'name' },
  { rpc: 'CreateKey', field: 'scopes', number: 4, repeated: true, property: 'scopes' },
  { rpc: 'CreateKey', field: 'ip_whitelist', number: 5, repeated: true, property: 'ipWhitelist' },
  { rpc: 'GetKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'GetKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'ListKeys', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'ListKeys', field: 'page_token', number: 4, repeated: false, property: 'pageToken' },
  { rpc: 'UpdateScopes', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'UpdateScopes', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'UpdateScopes', field: 'scopes', number: 3, repeated: true, property: 'scopes' },
  { rpc: 'UpdateIpWhitelist', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'UpdateIpWhitelist', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'UpdateIpWhitelist', field: 'ip_whitelist', number: 3, repeated: true, property: 'ipWhitelist' },
  { rpc: 'RevokeKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'RevokeKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'UpdateKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'UpdateKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'UpdateKey', field: 'name', number: 3, repeated: false, property: 'name' },
  { rpc: 'DisableKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'DisableKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'EnableKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'EnableKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'RotateKey', field: 'account_id', number: 1, repeated: false, property: 'accountId' },
  { rpc: 'RotateKey', field: 'key_id', number: 2, repeated: false, property: 'keyId' },
  { rpc: 'Verify', field: 'key', number: 1, repeated: false, property: 'key' },
  { rpc: 'Verify', field: 'client_ip', number: 2, repeated: false, property: 'clientIp' },
  { rpc: 'Verify', field: 'required_scopes', number: 3, repeated: true, property: 'requiredScopes' },
  { rpc: 'VerifyStream', field: 'request_id', number: 1, repeated: false, property: 'requestId' },
  { rpc: 'VerifyStream', field: 'key', number: 2, repeated: false, property: 'key' },
  { rpc: 'VerifyStream', field: 'client_ip', number: 3, repeated: false, property: 'clientIp' },
  { rpc: 'VerifyStream', field: 'required_scopes', number: 4, repeated: true, property: 'requiredScopes' },
];

type RequestObject = Record<string, unknown>;

/** A valid request of each RPC, as a plain object for the generated encoders. */
function baseRequest(h: Harness, rpc: Target['rpc']): RequestObject {
  switch (rpc) {
    case 'CreateKey':
      return { accountId: newAccountId(), name: 'k', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'], ipWhitelist: [] };
    case 'GetKey':
      return { accountId: h.home, keyId: h.keys.open.id };
    case 'ListKeys':
      return { accountId: h.home, includeRevoked: false, pageSize: 0, pageToken: '' };
    case 'UpdateScopes':
      return { accountId: h.home, keyId: h.keys.scopes.id, scopes: ['jobs:read'] };
    case 'UpdateIpWhitelist':
      return { accountId: h.home, keyId: h.keys.ips.id, ipWhitelist: [] };
    case 'RevokeKey':
      return { accountId: h.home, keyId: h.keys.revoked.id };
    case 'UpdateKey':
      return { accountId: h.home, keyId: h.keys.scopes.id, name: 'k', updateMask: ['name'] };
    // The revoked key: refused (or not found), so hostile strings never change a key the other properties rely on.
    case 'DisableKey':
    case 'EnableKey':
    case 'RotateKey':
      return { accountId: h.home, keyId: h.keys.revoked.id };
    case 'Verify':
      return { key: h.keys.open.secret, clientIp: CANONICAL_CLIENT_IP, requiredScopes: ['jobs:read'] };
    case 'VerifyStream':
      return { requestId: 'r0', key: h.keys.open.secret, clientIp: CANONICAL_CLIENT_IP, requiredScopes: ['jobs:read'] };
  }
}

function encodeRequest(rpc: Target['rpc'], request: RequestObject): Uint8Array {
  switch (rpc) {
    case 'CreateKey':
      return CreateKeyRequest.encode(CreateKeyRequest.fromPartial(request)).finish();
    case 'GetKey':
      return GetKeyRequest.encode(GetKeyRequest.fromPartial(request)).finish();
    case 'ListKeys':
      return ListKeysRequest.encode(ListKeysRequest.fromPartial(request)).finish();
    case 'UpdateScopes':
      return UpdateScopesRequest.encode(UpdateScopesRequest.fromPartial(request)).finish();
    case 'UpdateIpWhitelist':
      return UpdateIpWhitelistRequest.encode(UpdateIpWhitelistRequest.fromPartial(request)).finish();
    case 'RevokeKey':
      return RevokeKeyRequest.encode(RevokeKeyRequest.fromPartial(request)).finish();
    case 'UpdateKey':
      return UpdateKeyRequest.encode(UpdateKeyRequest.fromPartial(request)).finish();
    case 'DisableKey':
      return DisableKeyRequest.encode(DisableKeyRequest.fromPartial(request)).finish();
    case 'EnableKey':
      return EnableKeyRequest.encode(EnableKeyRequest.fromPartial(request)).finish();
    case 'RotateKey':
      return RotateKeyRequest.encode(RotateKeyRequest.fromPartial(request)).finish();
    case 'Verify':
      return VerifyRequest.encode(VerifyRequest.fromPartial(request)).finish();
    case 'VerifyStream':
      return VerifyStreamRequest.encode(VerifyStreamRequest.fromPartial(request)).finish();
  }
}

/** Sends bytes for any RPC (VerifyStream: between two valid requests) and checks the answers. */
async function runAny(h: Harness, rpc: Target['rpc'], bytes: Uint8Array, options: { lenient?: readonly string[]; random?: boolean } = {}): Promise<void> {
  if (rpc === 'Verify') return h.runVerify(bytes, options);
  if (rpc === 'VerifyStream') {
    const first = encodeRequest('VerifyStream', { ...baseRequest(h, 'VerifyStream'), requestId: 'first' });
    const last = encodeRequest('VerifyStream', { ...baseRequest(h, 'VerifyStream'), requestId: 'last' });
    return h.runStream([first, bytes, last], {
      lenient: new Map([[1, options.lenient ?? []]]),
      random: options.random ? new Set([1]) : new Set(),
    });
  }
  await h.runAdmin({ rpc, bytes, lenient: options.lenient, random: options.random });
}

/** expires_at as sent: relative specs resolved against now. */
function resolveTimestamp(spec: TimestampSpec): { seconds: bigint; nanos: number } | undefined {
  if (spec === undefined) return undefined;
  if ('seconds' in spec) return spec;
  const ms = Date.now() + spec.relativeMs;
  const seconds = Math.floor(ms / 1_000);
  return { seconds: BigInt(seconds), nanos: spec.nanos ?? (ms - seconds * 1_000) * 1_000_000 };
}

// ---------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------

/** KEYWARD_PROPERTY_ONLY=<parts of test names, separated by |> runs only the matching tests of this file (the set-ups still run). */
const only = (process.env.KEYWARD_PROPERTY_ONLY ?? '').split('|').filter((part) => part !== '');
const test = (title: string, body: () => Promise<void>): void => {
  // Tests left out by KEYWARD_PROPERTY_ONLY are not registered at all (a replay aid, never set in npm test).
  if (only.length === 0 || only.some((part) => title.includes(part))) it(title, body);
};

/** Accounts for admin requests: the home account (most keys), another, a fresh one, hostile text, near misses of home. */
function accountText(h: Harness, weights: { home?: number; other?: number } = {}): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: weights.home ?? 6, arbitrary: fc.constant(h.home) },
    { weight: weights.other ?? 1, arbitrary: fc.constant(h.other) },
    { weight: 1, arbitrary: fc.uuid().map((uuid) => `acct-${uuid}`) },
    { weight: 3, arbitrary: hostileText() },
    { weight: 1, arbitrary: fc.constantFrom(h.home.toUpperCase(), ` ${h.home}`, `${h.home}\u0000`, `${h.home}\u200b`, `${h.home}\t`) },
  );
}

const validEntry = fc.oneof(ipv4, ipv6, ipv4.map((a) => `${a}/24`), ipv6.map((a) => `${a}/64`));
/** Metadata: none, valid entries, or entries beyond a limit (key pattern, value length and characters, count, total size). */
const metadataKey = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,39}$/) },
  { weight: 1, arbitrary: fc.constantFrom('', 'Bad Key', '9lives', 'a'.repeat(41), `a${'b'.repeat(39)}`, 'ünï', 'a b') },
  { weight: 1, arbitrary: hostileText() },
);
const metadataValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: aroundLimits([255, 256, 257]) },
  { weight: 1, arbitrary: hostileText() },
);
const metadataInput = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  { weight: 4, arbitrary: fc.dictionary(metadataKey, metadataValue, { maxKeys: 6 }) },
  { weight: 1, arbitrary: fc.dictionary(metadataKey, metadataValue, { minKeys: 14, maxKeys: 20 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9]{0,9}$/), fc.string({ minLength: 200, maxLength: 256 }), { minKeys: 7, maxKeys: 12 }) },
);
const manyScopes = hostileList(scopeText(), { longLength: fc.oneof(fc.integer({ min: 60, max: 70 }), fc.integer({ min: 71, max: 5_000 })) });
const manyEntries = hostileList(whitelistEntry(), { longLength: fc.oneof(fc.integer({ min: 995, max: 1_005 }), fc.integer({ min: 1_006, max: 3_000 })) });
const requiredScopes = hostileList(scopeText(), { maxShort: 4, longLength: fc.oneof(fc.integer({ min: 62, max: 66 }), fc.integer({ min: 67, max: 3_000 })) });
const verifyIp = (maxLong: number): fc.Arbitrary<string> =>
  fc.oneof({ weight: 8, arbitrary: clientIp() }, { weight: 1, arbitrary: aroundLimits([63, 64, 65, 66]) }, { weight: 1, arbitrary: repeatedText(65, maxLong, ['1', 'a', ' ', '😀']) });

/** Keys for Verify: the known ones, near misses, never-issued well-formed ones, empty, garbage, long. */
function verifyKey(h: Harness, maxLong: number): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...[h.keys.open, h.keys.white, h.keys.revoked, h.keys.expired].map((key) => key.secret)) },
    { weight: 3, arbitrary: secretLike(h.pool) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom('fsm_live_', 'fsm_test_'), fc.uint8Array({ minLength: 32, maxLength: 32 })).map(([prefix, bytes]) => wellFormedSecret(prefix, bytes)),
    },
    { weight: 1, arbitrary: fc.constant('') },
    { weight: 2, arbitrary: hostileText() },
    { weight: 1, arbitrary: repeatedText(59, maxLong) },
  );
}

describe('every RPC with hostile input, over the wire (properties)', () => {
  let h: Harness;

  before(async () => {
    h = new Harness(await startServer());
    await h.setUp();
  });

  after(async () => {
    h.close();
    await h.db.end();
    await stopServer(h.server);
  });

  test('usage: Verify with a hostile client_ip stores last_used_ip as its canonical address or empty, and counting goes on (property)', async () => {
    const key = h.keys.usage;
    const ips = fc.oneof({ weight: 4, arbitrary: clientIp() }, { weight: 1, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) }).filter((ip) => lengthClass(ip, 0, 64) === 'ok');
    await checkProperty(
      'usage last_used_ip',
      fc.asyncProperty(ips, async (ip) => {
        const before = (await h.admin.getKey({ accountId: key.accountId, keyId: key.id })).key?.requestCount ?? 0n;
        const bytes = VerifyRequest.encode({ key: key.secret, clientIp: ip, requiredScopes: [] }).finish();
        const seen = VerifyRequest.decode(bytes).clientIp;
        const answer = await h.verifier.unary(VERIFY_PATH, bytes, (b) => VerifyResponse.decode(b), h.deadlineMs);
        if (answer.code !== status.OK || answer.response?.code !== VerifyCode.VERIFY_CODE_OK) {
          throw new Error(`Verify from ${summarize(seen)} of a key without whitelist: ${statusName(answer.code)} ${summarize(answer.details)} ${answer.response ? codeName(answer.response.code) : ''}`);
        }
        const stored = await waitForUses(h.admin, key.accountId, key.id, before + 1n, 2_000);
        if ((stored?.requestCount ?? 0n) < before + 1n) {
          throw new Error(`after a Verify from ${summarize(seen)}, request_count stayed ${stored?.requestCount} (expected ${before + 1n}): usage writes stopped`);
        }
        const { strict, candidates } = classifyClientIp(seen);
        const allowed = strict !== undefined ? [strict] : ['', ...candidates];
        if (!allowed.includes(stored?.lastUsedIp ?? '')) {
          throw new Error(`client_ip ${summarize(seen)} stored last_used_ip ${summarize(stored?.lastUsedIp)}; expected ${allowed.map((a) => summarize(a)).join(' or ')}`);
        }
      }),
      { numRuns: 30, endOnFailure: true },
    );
  });

  test('CreateKey: hostile fields create the key the contract describes, or are refused naming the field, storing nothing (property)', async () => {
    const input = fc.record({
      accountId: fc.oneof({ weight: 4, arbitrary: fc.uuid().map((uuid) => `acct-${uuid}`) }, { weight: 3, arbitrary: hostileText() }),
      name: fc.oneof({ weight: 4, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }) }, { weight: 3, arbitrary: hostileText() }),
      environment: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: fc.constantFrom(0, 3, 99, -1, 2 ** 31 - 1, -(2 ** 31)) }),
      scopes: fc.oneof({ weight: 3, arbitrary: fc.array(fc.constantFrom(...SCOPES), { minLength: 1, maxLength: 4 }) }, { weight: 2, arbitrary: manyScopes }),
      ipWhitelist: fc.oneof({ weight: 3, arbitrary: fc.array(validEntry, { maxLength: 4 }) }, { weight: 3, arbitrary: manyEntries }),
      expires: timestampSpec,
      metadata: metadataInput,
    });
    await checkProperty(
      'CreateKey',
      fc.asyncProperty(input, async ({ expires: spec, ...request }) => {
        const expires = resolveTimestamp(spec);
        const base = CreateKeyRequest.encode({ ...request, expiresAt: undefined }).finish();
        const bytes = expires === undefined ? base : concatBytes(base, timestampField(6, expires.seconds, expires.nanos));
        await h.runAdmin({ rpc: 'CreateKey', bytes, expires });
      }),
      { numRuns: 200, timeLimitMs: 15_000 },
    );
  });

  test('GetKey: hostile account_id and key_id answer the key, NOT_FOUND, or INVALID_ARGUMENT naming the field (property)', async () => {
    const ids = Object.values(h.keys).map((key) => key.id);
    const input = fc.record({ accountId: accountText(h), keyId: keyIdText(ids) });
    await checkProperty(
      'GetKey',
      fc.asyncProperty(input, async (request) => {
        await h.runAdmin({ rpc: 'GetKey', bytes: GetKeyRequest.encode(request).finish() });
      }),
      { numRuns: 200, timeLimitMs: 10_000 },
    );
  });

  test('ListKeys: hostile account_id, page_size and forged page tokens list the account or are refused naming the field (property)', async () => {
    const issued = [...issuedTokens.keys()];
    const input = fc.record({
      accountId: accountText(h, { home: 6, other: 2 }),
      includeRevoked: fc.boolean(),
      pageSize: fc.oneof(
        fc.constantFrom(0, 0, 1, 2, 3, 50, 999, 1_000, 1_001, 5_000, 2 ** 31 - 1, 2 ** 32 - 1, -1, -(2 ** 31)),
        fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }),
      ),
      pageToken: fc.oneof(
        { weight: 3, arbitrary: fc.constant('') },
        { weight: 3, arbitrary: fc.constantFrom(...issued) },
        { weight: 4, arbitrary: forgedPageToken([h.home, h.other]) },
        { weight: 2, arbitrary: hostileText() },
        { weight: 1, arbitrary: aroundLimits([511, 512, 513, 600, 70_000]) },
      ),
    });
    await checkProperty(
      'ListKeys',
      fc.asyncProperty(input, async ({ pageSize, ...request }) => {
        // page_size goes on the wire as a varint of any value: negative ones take ten bytes, as protobuf writes a negative int32.
        const base = ListKeysRequest.encode({ ...request, pageSize: 0 }).finish();
        const bytes = pageSize === 0 ? base : concatBytes(base, varintField(3, BigInt(pageSize)));
        await h.runAdmin({ rpc: 'ListKeys', bytes });
      }),
      { numRuns: 200, timeLimitMs: 10_000 },
    );
  });

  test('UpdateScopes: hostile scopes, account_id and key_id replace the scopes or are refused, leaving the key as it was (property)', async () => {
    const input = fc.record({
      accountId: accountText(h),
      keyId: keyIdText([h.keys.scopes.id, h.keys.revoked.id, h.keys.other.id]),
      scopes: fc.oneof({ weight: 3, arbitrary: fc.array(fc.constantFrom(...SCOPES), { minLength: 1, maxLength: 4 }) }, { weight: 3, arbitrary: manyScopes }),
    });
    await checkProperty(
      'UpdateScopes',
      fc.asyncProperty(input, async (request) => {
        await h.runAdmin({ rpc: 'UpdateScopes', bytes: UpdateScopesRequest.encode(request).finish() });
      }),
      { numRuns: 150, timeLimitMs: 10_000 },
    );
  });

  test('UpdateKey: hostile update masks, names, expiries and metadata change the masked fields or are refused naming the mask or the field, leaving the key as it was (property)', async () => {
    const path = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('name', 'expires_at', 'metadata') }, { weight: 1, arbitrary: fc.constantFrom('', '*', 'scopes', 'Name', 'metadata.team', 'name ') }, { weight: 1, arbitrary: hostileText() });
    const input = fc.record({
      accountId: accountText(h),
      keyId: keyIdText([h.keys.scopes.id, h.keys.revoked.id, h.keys.other.id]),
      name: fc.oneof({ weight: 4, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }) }, { weight: 2, arbitrary: hostileText() }),
      expiresInMs: fc.oneof(fc.constant(undefined), fc.integer({ min: 60_000, max: 10 ** 10 }), fc.integer({ min: -(10 ** 10), max: -60_000 })),
      metadata: metadataInput,
      updateMask: fc.oneof({ weight: 1, arbitrary: fc.constant(undefined) }, { weight: 8, arbitrary: fc.array(path, { maxLength: 4 }) }),
    });
    await checkProperty(
      'UpdateKey',
      fc.asyncProperty(input, async ({ expiresInMs, ...request }) => {
        const expiresAt = expiresInMs === undefined ? undefined : new Date(Date.now() + expiresInMs);
        await h.runAdmin({ rpc: 'UpdateKey', bytes: UpdateKeyRequest.encode({ ...request, expiresAt }).finish() });
      }),
      { numRuns: 150, timeLimitMs: 10_000 },
    );
  });

  test('UpdateIpWhitelist: hostile entries (zone ids, leading zeros, mapped, thousands) replace the whitelist or are refused, leaving the key as it was (property)', async () => {
    const input = fc.record({
      accountId: accountText(h),
      keyId: keyIdText([h.keys.ips.id, h.keys.revoked.id, h.keys.other.id]),
      ipWhitelist: fc.oneof({ weight: 2, arbitrary: fc.array(validEntry, { maxLength: 4 }) }, { weight: 4, arbitrary: manyEntries }),
    });
    await checkProperty(
      'UpdateIpWhitelist',
      fc.asyncProperty(input, async (request) => {
        await h.runAdmin({ rpc: 'UpdateIpWhitelist', bytes: UpdateIpWhitelistRequest.encode(request).finish() });
      }),
      { numRuns: 150, timeLimitMs: 10_000 },
    );
  });

  test('RevokeKey: hostile account_id and key_id revoke the named key of the account or are refused, leaving every key as it was (property)', async () => {
    const input = fc.record({
      accountId: accountText(h, { other: 0 }),
      target: fc.oneof(
        { weight: 3, arbitrary: fc.record({ fresh: fc.constant(true as const), how: fc.constantFrom('exact', 'exact', 'upper', 'space', 'nul', 'braces') }) },
        { weight: 4, arbitrary: keyIdText([h.keys.revoked.id, h.keys.other.id]).map((text) => ({ fresh: false as const, text })) },
      ),
    });
    await checkProperty(
      'RevokeKey',
      fc.asyncProperty(input, async ({ accountId, target }) => {
        let keyId: string;
        if (target.fresh) {
          const { key, secret } = await h.admin.newKey(h.home);
          remember(secret);
          const id = key?.id as string;
          keyId = { exact: id, upper: id.toUpperCase(), space: ` ${id}`, nul: `${id}\u0000`, braces: `{${id}}` }[target.how];
        } else {
          keyId = target.text;
        }
        await h.runAdmin({ rpc: 'RevokeKey', bytes: RevokeKeyRequest.encode({ accountId, keyId }).finish() });
      }),
      { numRuns: 100, timeLimitMs: 10_000 },
    );
  });

  test('DisableKey and EnableKey: hostile account_id and key_id disable or enable the named key of the account or are refused, leaving every key as it was (property)', async () => {
    const input = fc.record({
      rpc: fc.constantFrom('DisableKey' as const, 'EnableKey' as const),
      accountId: accountText(h, { other: 0 }),
      target: fc.oneof(
        { weight: 3, arbitrary: fc.record({ fresh: fc.constant(true as const), disabled: fc.boolean(), how: fc.constantFrom('exact', 'exact', 'upper', 'space', 'nul') }) },
        { weight: 3, arbitrary: keyIdText([h.keys.revoked.id, h.keys.other.id]).map((text) => ({ fresh: false as const, text })) },
      ),
    });
    await checkProperty(
      'DisableKey/EnableKey',
      fc.asyncProperty(input, async ({ rpc, accountId, target }) => {
        let keyId: string;
        if (target.fresh) {
          const { key, secret } = await h.admin.newKey(h.home);
          remember(secret);
          const id = key?.id as string;
          if (target.disabled) await h.admin.disableKey({ accountId: h.home, keyId: id });
          keyId = { exact: id, upper: id.toUpperCase(), space: ` ${id}`, nul: `${id}\u0000` }[target.how];
        } else {
          keyId = target.text;
        }
        const request = { accountId, keyId };
        await h.runAdmin({ rpc, bytes: rpc === 'DisableKey' ? DisableKeyRequest.encode(request).finish() : EnableKeyRequest.encode(request).finish() });
      }),
      { numRuns: 100, timeLimitMs: 10_000 },
    );
  });

  test('RotateKey: hostile grace periods, account_id and key_id replace the named key (its copy created, the old one revoked or expiring within the grace) or are refused naming grace_period, creating nothing (property)', async () => {
    const maxSeconds = 2_592_000n;
    const gracePeriod = fc.oneof(
      { weight: 2, arbitrary: fc.constant(undefined) },
      { weight: 4, arbitrary: fc.record({ seconds: fc.bigInt({ min: 0n, max: maxSeconds }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }) },
      { weight: 2, arbitrary: fc.record({ seconds: fc.constantFrom(0n, maxSeconds - 1n, maxSeconds, maxSeconds + 1n), nanos: fc.constantFrom(0, 1, 999, 1_000, 999_999_999) }) },
      { weight: 2, arbitrary: fc.record({ seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), nanos: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }) },
      { weight: 1, arbitrary: fc.record({ seconds: fc.constantFrom(-1n, 1n, 0n), nanos: fc.constantFrom(-1, -999_999_999, 1_000_000_000, -1_000_000_000) }) },
    );
    const input = fc.record({
      accountId: accountText(h, { other: 0 }),
      target: fc.oneof(
        { weight: 4, arbitrary: fc.record({ fresh: fc.constant(true as const), how: fc.constantFrom('exact', 'exact', 'upper', 'space') }) },
        { weight: 2, arbitrary: keyIdText([h.keys.revoked.id, h.keys.other.id]).map((text) => ({ fresh: false as const, text })) },
      ),
      gracePeriod,
    });
    await checkProperty(
      'RotateKey',
      fc.asyncProperty(input, async ({ accountId, target, gracePeriod }) => {
        let keyId: string;
        if (target.fresh) {
          const { key, secret } = await h.admin.newKey(h.home);
          remember(secret);
          const id = key?.id as string;
          keyId = { exact: id, upper: id.toUpperCase(), space: ` ${id}` }[target.how];
        } else {
          keyId = target.text;
        }
        await h.runAdmin({ rpc: 'RotateKey', bytes: RotateKeyRequest.encode({ accountId, keyId, gracePeriod }).finish() });
      }),
      { numRuns: 100, timeLimitMs: 10_000 },
    );
  });

  test('Verify: hostile key, client_ip and required_scopes get the verdict the contract gives, or INVALID_ARGUMENT naming client_ip or required_scopes (property)', async () => {
    const input = fc.record({ key: verifyKey(h, 100_000), clientIp: verifyIp(70_000), requiredScopes });
    await checkProperty(
      'Verify',
      fc.asyncProperty(input, async (request) => {
        await h.runVerify(VerifyRequest.encode(request).finish());
      }),
      { numRuns: 300, timeLimitMs: 10_000 },
    );
  });

  test('VerifyStream: each hostile request gets its own answer (request_id over 256 characters: an error naming request_id), and the stream goes on (property)', async () => {
    const requestId = fc.oneof(
      { weight: 4, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
      { weight: 2, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
      { weight: 2, arbitrary: repeatedText(250, 262, ['r']) },
      { weight: 1, arbitrary: repeatedText(1_000, 70_000, ['r', '😀']) },
    );
    const request = fc.record({ requestId, key: verifyKey(h, 20_000), clientIp: verifyIp(20_000), requiredScopes });
    await checkProperty(
      'VerifyStream',
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 10 }), async (requests) => {
        // request_ids unique as the server reads them, and none empty beside an oversized one (whose answer has an empty request_id).
        const oversized = requests.some((r) => lengthClass(r.requestId, 0, 256) !== 'ok');
        const seen = new Set<string>();
        const messages = requests.map((r, i) => {
          let id = VerifyStreamRequest.decode(VerifyStreamRequest.encode({ requestId: r.requestId, key: '', clientIp: '', requiredScopes: [] }).finish()).requestId;
          if (lengthClass(id, 0, 256) === 'ok' && (seen.has(id) || (oversized && id === ''))) id = `unique-${i}`;
          seen.add(id);
          return VerifyStreamRequest.encode({ ...r, requestId: id }).finish();
        });
        await h.runStream(messages);
      }),
      { numRuns: 60, timeLimitMs: 12_000 },
    );
  });

  test('every RPC: no error echoes a secret put (as is, or almost) into any string field (property)', async () => {
    const input = fc.record({
      target: fc.constantFrom(...TARGETS),
      secret: secretLike(h.pool),
      wrap: fc.constantFrom('', '', '\u0000', ' ', 'x', '/24', '😀'.repeat(60)),
    });
    await checkProperty(
      'secret echo',
      fc.asyncProperty(input, async ({ target, secret, wrap }) => {
        const request = baseRequest(h, target.rpc);
        const value = secret + wrap;
        request[target.property] = target.repeated ? [value] : value;
        await runAny(h, target.rpc, encodeRequest(target.rpc, request));
      }),
      { numRuns: 200, timeLimitMs: 10_000 },
    );
  });

  test('every RPC: invalid UTF-8 in any string field is read (as U+FFFD) or refused naming the field or the message, never INTERNAL (property)', async () => {
    const input = fc.record({ target: fc.constantFrom(...TARGETS), payload: invalidUtf8() });
    await checkProperty(
      'invalid UTF-8',
      fc.asyncProperty(input, async ({ target, payload }) => {
        const base = baseRequest(h, target.rpc);
        const index = target.repeated ? ((base[target.property] as unknown[] | undefined)?.length ?? 0) : undefined;
        // The field written again at the end: the last value of a scalar wins, a repeated field gets one more entry.
        const bytes = concatBytes(encodeRequest(target.rpc, base), bytesField(target.number, payload));
        const lenient = index === undefined ? [target.field] : [target.field, `${target.field}[${index}]`];
        await runAny(h, target.rpc, bytes, { lenient });
      }),
      { numRuns: 200, timeLimitMs: 10_000 },
    );
  });

  test('every RPC: a malformed protobuf message is INVALID_ARGUMENT naming the request message (or its method), never INTERNAL (property)', async () => {
    const rpcs = ['CreateKey', 'GetKey', 'ListKeys', 'UpdateScopes', 'UpdateIpWhitelist', 'RevokeKey', 'UpdateKey', 'DisableKey', 'EnableKey', 'RotateKey', 'Verify', 'VerifyStream'] as const;
    const bases = new Map(rpcs.map((rpc) => [rpc, encodeRequest(rpc, { ...baseRequest(h, rpc), ...(rpc === 'CreateKey' ? { accountId: `acct-malformed-${randomUUID()}` } : {}) })]));
    const input = fc.constantFrom(...rpcs).chain((rpc) => malformedBytes(bases.get(rpc) as Uint8Array).map((bytes) => ({ rpc, bytes })));
    await checkProperty(
      'malformed protobuf',
      fc.asyncProperty(input, async ({ rpc, bytes }) => {
        await runAny(h, rpc, bytes, { random: true });
      }),
      { numRuns: 160, timeLimitMs: 10_000 },
    );
  });

  test('stays healthy after the properties: a fresh key verified N times shows request_count N; hostile client_ip is stored canonical or empty; no admin call ended INTERNAL', async () => {
    const problems: string[] = [];
    const accountId = newAccountId();
    const { key, secret } = await h.admin.newKey(accountId);
    remember(secret);
    const keyId = key?.id as string;
    const verifier = new VerifierClient(h.server.address);
    try {
      const uses = 25;
      for (let i = 0; i < uses; i++) {
        const answer = await verifier.verify({ key: secret, clientIp: CANONICAL_CLIENT_IP, requiredScopes: ['jobs:read'] });
        if (answer.code !== VerifyCode.VERIFY_CODE_OK) problems.push(`Verify ${i}: ${codeName(answer.code)}`);
      }
      const used = await waitForUses(h.admin, accountId, keyId, BigInt(uses), 2_500);
      if (used?.requestCount !== BigInt(uses)) problems.push(`request_count ${used?.requestCount} after ${uses} uses`);
      else if (used.lastUsedIp !== CANONICAL_CLIENT_IP) problems.push(`last_used_ip ${summarize(used.lastUsedIp)} after uses from ${CANONICAL_CLIENT_IP}`);

      let count = used?.requestCount ?? 0n;
      for (const [ip, expected] of [
        ['::ffff:1.2.3.4', '1.2.3.4'],
        ['1.2.3.4\u0000x', ''],
        [MARKUP, ''],
        ['2001:0DB8:0000::0001', '2001:db8::1'],
        ['010.0.0.1', ''],
        ['fe80::1%eth0', ''],
      ] as const) {
        try {
          const answer = await verifier.verify({ key: secret, clientIp: ip });
          if (answer.code !== VerifyCode.VERIFY_CODE_OK) problems.push(`Verify from ${summarize(ip)}: ${codeName(answer.code)}`);
        } catch (error) {
          problems.push(`Verify from ${summarize(ip)}: ${statusName((error as ServiceError).code)} ${(error as ServiceError).details}`);
          continue;
        }
        count++;
        const after = await waitForUses(h.admin, accountId, keyId, count, 1_500);
        if ((after?.requestCount ?? 0n) < count) problems.push(`request_count ${after?.requestCount} after a use from ${summarize(ip)} (expected ${count})`);
        else if (after?.lastUsedIp !== expected) problems.push(`client_ip ${summarize(ip)} stored last_used_ip ${summarize(after?.lastUsedIp)}; expected ${summarize(expected)}`);
        count = after?.requestCount ?? count;
      }
    } finally {
      verifier.close();
    }
    const metrics = await scrapeMetrics(h.server.metricsPort as number);
    for (const [series, value] of metrics) {
      if (series.startsWith('keyward_admin_calls_total') && /code="(INTERNAL|UNKNOWN)"/.test(series) && value > 0) problems.push(`${series} ${value}`);
    }
    assert.deepEqual(problems, []);
  });

  test('writes no secret it created to its log (all properties done)', async () => {
    h.close();
    const code = await stopServer(h.server);
    const log = h.server.log;
    const leaked = [...secrets].filter((secret) => log.includes(secret.slice(9)));
    assert.deepEqual(leaked.map((secret) => `${secret.slice(0, 13)}…`), [], 'secrets in the server log');
    assert.equal(code, 0, 'the server did not stop cleanly');
  });
});

describe('every RPC with huge input, over the wire (property; a server of its own)', () => {
  let h: Harness;

  before(async () => {
    // A short deadline: a server that stops answering under huge input fails the property instead of holding the file.
    h = new Harness(await startServer(), 5_000);
    await h.setUp();
  });

  after(async () => {
    h.close();
    await h.db.end();
    await stopServer(h.server, 3_000);
  });

  test('every RPC: a request over 1 MiB is RESOURCE_EXHAUSTED; a huge field or list under it is INVALID_ARGUMENT naming the field or answered, within the deadline (property)', async () => {
    const input = fc.record({
      target: fc.constantFrom(...TARGETS),
      bytes: fc.oneof(fc.integer({ min: 1_040_000, max: 1_060_000 }), fc.integer({ min: 1_060_000, max: 1_250_000 }), fc.constantFrom(70_000, 300_000, 900_000)),
      char: fc.constantFrom('a', 'a', 'é', '😀', '\u0000', '1'),
      asList: fc.boolean(),
    });
    await checkProperty(
      'huge input',
      fc.asyncProperty(input, async ({ target, bytes: size, char, asList }) => {
        const request = baseRequest(h, target.rpc);
        if (target.repeated && asList) {
          const entry = target.field === 'ip_whitelist' ? '203.0.113.5' : 'jobs:read';
          request[target.property] = Array.from({ length: Math.floor(size / (entry.length + 2)) }, () => entry);
        } else {
          const text = char.repeat(Math.floor(size / Buffer.byteLength(char)));
          request[target.property] = target.repeated ? [text] : text;
        }
        await runAny(h, target.rpc, encodeRequest(target.rpc, request));
      }),
      // No shrinking: a server that a huge input keeps busy answers nothing else for a long time.
      { numRuns: 30, endOnFailure: true, timeLimitMs: 20_000 },
    );
  });

  test('answers at once after the huge input (its event loop is free)', async () => {
    const started = Date.now();
    const outcome = await h.rawAdmin.unary(ADMIN_PATH + 'GetKey', GetKeyRequest.encode({ accountId: h.home, keyId: h.keys.open.id }).finish(), (b) => GetKeyResponse.decode(b), 5_000);
    assert.equal(outcome.code, status.OK, `GetKey after the huge input: ${statusName(outcome.code)} ${outcome.details} after ${Date.now() - started} ms`);
  });
});

// ---------------------------------------------------------------------------
// Regressions: the specific failures, as plain examples (each on a server of its own)
// ---------------------------------------------------------------------------

/** Runs `body` against a fresh server; collects problems instead of stopping at the first. */
async function withServer(body: (server: ServerProcess, admin: AdminClient, verifier: VerifierClient, problems: string[]) => Promise<void>): Promise<void> {
  const server = await startServer();
  const admin = new AdminClient(server.address);
  const verifier = new VerifierClient(server.address);
  const problems: string[] = [];
  try {
    await body(server, admin, verifier, problems);
  } finally {
    admin.close();
    verifier.close();
    await stopServer(server);
  }
  const leaked = [...secrets].filter((secret) => server.log.includes(secret.slice(9)));
  if (leaked.length > 0) problems.push(`${leaked.length} secret(s) in the server log`);
  assert.deepEqual(problems, []);
}

async function grpcOutcome(promise: Promise<unknown>): Promise<{ code: status; details: string }> {
  try {
    await promise;
    return { code: status.OK, details: '' };
  } catch (error) {
    return { code: (error as ServiceError).code, details: (error as ServiceError).details };
  }
}

describe('hostile input regressions (examples)', () => {
  test('client_ip "1.2.3.4\\u0000x" answers OK for a key without whitelist, and usage counting goes on: another key verified 10 times shows request_count 10', async () => {
    await withServer(async (_server, admin, verifier, problems) => {
      const accountId = newAccountId();
      const first = await admin.newKey(accountId);
      const second = await admin.newKey(accountId);
      remember(first.secret);
      remember(second.secret);
      try {
        const answer = await verifier.verify({ key: first.secret, clientIp: '1.2.3.4\u0000x' });
        if (answer.code !== VerifyCode.VERIFY_CODE_OK) problems.push(`Verify from "1.2.3.4\\u0000x": ${codeName(answer.code)}; expected VERIFY_CODE_OK`);
      } catch (error) {
        problems.push(`Verify from "1.2.3.4\\u0000x": ${statusName((error as ServiceError).code)} ${(error as ServiceError).details}; expected VERIFY_CODE_OK`);
      }
      for (let i = 0; i < 10; i++) await verifier.verify({ key: second.secret, clientIp: CANONICAL_CLIENT_IP });
      const counted = await waitForUses(admin, accountId, second.key?.id as string, 10n, 2_000);
      if (counted?.requestCount !== 10n) problems.push(`request_count of the other key is ${counted?.requestCount} after 10 uses; expected 10`);
      const nul = await waitForUses(admin, accountId, first.key?.id as string, 1n, 500);
      if (nul?.requestCount === 1n && nul.lastUsedIp !== '') problems.push(`last_used_ip ${summarize(nul.lastUsedIp)} for client_ip "1.2.3.4\\u0000x"; expected ""`);
    });
  });

  test('15 keys each verified with a 300 kB client_ip: INVALID_ARGUMENT naming client_ip; ListKeys (page size 50) still loads with a default client; markup in client_ip never comes back from GetKey', async () => {
    await withServer(async (_server, admin, verifier, problems) => {
      const accountId = newAccountId();
      const keys: Array<{ id: string; secret: string }> = [];
      for (let i = 0; i < 15; i++) {
        const { key, secret } = await admin.newKey(accountId, { name: `key ${i}` });
        remember(secret);
        keys.push({ id: key?.id as string, secret });
      }
      const huge = `203.0.113.5${'x'.repeat(300_000 - 11)}`;
      for (const [i, key] of keys.entries()) {
        const { code, details } = await grpcOutcome(verifier.verify({ key: key.secret, clientIp: huge }));
        if (code !== status.INVALID_ARGUMENT || namedField(details) !== 'client_ip') problems.push(`key ${i}: Verify with a 300 kB client_ip answered ${statusName(code)} ${summarize(details)}; expected INVALID_ARGUMENT naming client_ip`);
        else if (details.length > 1_000) problems.push(`key ${i}: the INVALID_ARGUMENT details are ${details.length} characters long`);
      }
      // A use of one more key, flushed: whatever the 300 kB calls recorded has been written by then.
      const sentinel = await admin.newKey(accountId, { name: 'sentinel' });
      remember(sentinel.secret);
      await verifier.verify({ key: sentinel.secret, clientIp: CANONICAL_CLIENT_IP });
      const flushed = await waitForUses(admin, accountId, sentinel.key?.id as string, 1n, 2_000);
      if (flushed?.requestCount !== 1n) problems.push(`request_count of the sentinel key is ${flushed?.requestCount} after one use`);
      const listed = await grpcOutcome(
        admin.listKeys({ accountId, pageSize: 50 }).then((page) => {
          if (page.keys.length !== 16) problems.push(`ListKeys listed ${page.keys.length} keys; expected 16`);
          const long = page.keys.filter((k) => k.lastUsedIp.length > 64);
          if (long.length > 0) problems.push(`${long.length} listed keys have a last_used_ip over 64 characters (${long[0]?.lastUsedIp.length})`);
        }),
      );
      if (listed.code !== status.OK) problems.push(`ListKeys (page size 50, default client) failed: ${statusName(listed.code)} ${summarize(listed.details)}`);

      const target = keys[0] as { id: string; secret: string };
      const before = (await admin.getKey({ accountId, keyId: target.id })).key?.requestCount ?? 0n;
      const markup = await grpcOutcome(verifier.verify({ key: target.secret, clientIp: MARKUP }));
      if (markup.code !== status.OK) problems.push(`Verify from ${MARKUP}: ${statusName(markup.code)} ${markup.details}; expected an answer (OK)`);
      else {
        const used = await waitForUses(admin, accountId, target.id, before + 1n, 2_000);
        if ((used?.requestCount ?? 0n) < before + 1n) problems.push(`request_count stayed ${used?.requestCount} after a use from markup`);
        else if (used?.lastUsedIp !== '') problems.push(`GetKey returned last_used_ip ${summarize(used?.lastUsedIp)} for client_ip ${MARKUP}; expected ""`);
      }
    });
  });

  test('a page token naming a position beyond bigint ("s":"9999999999999999999") is INVALID_ARGUMENT naming page_token, not INTERNAL', async () => {
    await withServer(async (_server, admin, _verifier, problems) => {
      const accountId = newAccountId();
      for (let i = 0; i < 3; i++) remember((await admin.newKey(accountId)).secret);
      for (const s of ['9999999999999999999', '9223372036854775808']) {
        const token = Buffer.from(JSON.stringify({ v: 1, a: accountId, r: false, s })).toString('base64url');
        const { code, details } = await grpcOutcome(admin.listKeys({ accountId, pageToken: token }));
        if (code !== status.INVALID_ARGUMENT || namedField(details) !== 'page_token') problems.push(`page token with s=${s}: ${statusName(code)} ${summarize(details)}; expected INVALID_ARGUMENT naming page_token`);
      }
    });
  });

  test('100 kB of lowercase letters in a quoted field (name) is INVALID_ARGUMENT within 3 s, and the server answers at once afterwards', async () => {
    const server = await startServer();
    const raw = new RawClient(server.address, ADMIN_TOKEN);
    const problems: string[] = [];
    try {
      const request = CreateKeyRequest.encode(
        CreateKeyRequest.fromPartial({ accountId: newAccountId(), name: 'a'.repeat(100_000), environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] }),
      ).finish();
      const started = Date.now();
      const outcome = await raw.unary(`${ADMIN_PATH}CreateKey`, request, (b) => CreateKeyResponse.decode(b), 3_000);
      if (outcome.code !== status.INVALID_ARGUMENT || namedField(outcome.details) !== 'name') {
        problems.push(`CreateKey with a 100 kB name: ${statusName(outcome.code)} ${summarize(outcome.details)} after ${Date.now() - started} ms; expected INVALID_ARGUMENT naming name`);
      }
      const probe = await raw.unary(`${ADMIN_PATH}ListKeys`, ListKeysRequest.encode({ accountId: newAccountId(), includeRevoked: false, pageSize: 0, pageToken: '' }).finish(), (b) => ListKeysResponse.decode(b), 2_000);
      if (probe.code !== status.OK) problems.push(`ListKeys right after: ${statusName(probe.code)} ${summarize(probe.details)} (the event loop is still busy)`);
    } finally {
      raw.close();
      await stopServer(server, 2_000);
    }
    assert.deepEqual(problems, []);
  });

  test('IPv4-compatible "::1.2.3.4" is the IPv6 address ::102:304 (RFC 4291), not 1.2.3.4: stored so, and outside a whitelist of 1.2.3.4', async () => {
    await withServer(async (_server, admin, verifier, problems) => {
      const accountId = newAccountId();
      const open = await admin.newKey(accountId);
      const listed = await admin.newKey(accountId, { ipWhitelist: ['1.2.3.4'] });
      remember(open.secret);
      remember(listed.secret);
      await verifier.verify({ key: open.secret, clientIp: '::1.2.3.4' });
      const used = await waitForUses(admin, accountId, open.key?.id as string, 1n, 2_000);
      if (used?.lastUsedIp !== '::102:304') problems.push(`client_ip "::1.2.3.4" stored last_used_ip ${summarize(used?.lastUsedIp)}; expected "::102:304"`);
      const answer = await verifier.verify({ key: listed.secret, clientIp: '::1.2.3.4' });
      if (answer.code !== VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED) problems.push(`client_ip "::1.2.3.4" against a whitelist of 1.2.3.4: ${codeName(answer.code)}; expected VERIFY_CODE_IP_NOT_ALLOWED`);
      const created = await grpcOutcome(
        admin.newKey(accountId, { ipWhitelist: ['::1.2.3.4'] }).then(({ key, secret }) => {
          remember(secret);
          if (JSON.stringify(key?.ipWhitelist) !== JSON.stringify(['::102:304'])) problems.push(`whitelist entry "::1.2.3.4" stored as ${summarize(key?.ipWhitelist)}; expected ["::102:304"]`);
        }),
      );
      if (created.code !== status.OK && !(created.code === status.INVALID_ARGUMENT && namedField(created.details) === 'ip_whitelist[0]')) {
        problems.push(`whitelist entry "::1.2.3.4": ${statusName(created.code)} ${created.details}`);
      }
    });
  });
});

after(async () => {
  await assertNoLeaks();
});
