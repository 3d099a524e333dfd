/**
 * A bounded soak of a keyward fleet (issue 10, item 4).
 *
 * Three real keyward processes share a Redis of their own (PrivateRedis, so
 * it can be stopped and restarted) and reach PostgreSQL through a FaultProxy
 * (so it can be made unreachable and slow). Verify load runs against every
 * instance, unary and over VerifyStream, while keys are created, narrowed
 * (UpdateScopes, UpdateIpWhitelist), revoked and replaced. Meanwhile the run
 * injects, one after the other with recovery in between: Redis stopped and
 * restarted, PostgreSQL unreachable (refuse + cut), PostgreSQL slow
 * (delayResponses), pub/sub connections dropped (CLIENT KILL TYPE pubsub),
 * and one instance SIGKILLed and restarted.
 *
 * Every answer is checked against the truth: the key's state as of its last
 * change whose admin call returned before the Verify call was sent; a change
 * in flight (sent, not yet returned, or failed and being retried) while the
 * Verify was in flight may or may not be seen. Errors are allowed only
 * during a fault (plus its recovery and an allowance), and only UNAVAILABLE.
 * Usage counts (request_count, refused_count) of the keys verified only on
 * instances that are never killed are compared exactly with the answers
 * they got, read through ListKeys once every instance stopped (SIGTERM).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type ClientDuplexStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import {
  Environment,
  VerifyCode,
  VerifyRequest,
  type VerifyResponse,
  VerifyStreamRequest,
  type VerifyStreamResponse,
} from '../../src/gen/keyward/v1/keyward';
import { KeyFormat } from '../../src/keys/KeyFormat';
import { DEFAULT_SCOPES } from '../../src/keys/scopes';
import { AdminClient, VerifierClient } from '../helpers/clients';
import { testDatabaseUrl } from '../helpers/env';
import { FaultProxy } from '../helpers/FaultProxy';
import { scrapeMetrics } from '../helpers/metrics';
import { PrivateRedis } from '../helpers/PrivateRedis';
import { ServerProcess } from '../helpers/serverProcess';
import { waitUntil } from '../helpers/waitUntil';

// ---------------------------------------------------------------------------
// Options and report

export interface SoakOptions {
  /** How long the load and the fault schedule run (setup and the final checks come on top). */
  durationMs: number;
  log?: (line: string) => void;
  /** A migrated database; defaults to the test run's (KEYWARD_TEST_DATABASE_URL). */
  databaseUrl?: string;
}

export type FaultKind = 'redis-stop' | 'pg-unreachable' | 'pg-slow' | 'pubsub-drop' | 'instance-sigkill';
export const FAULT_KINDS: readonly FaultKind[] = ['redis-stop', 'pg-unreachable', 'pg-slow', 'pubsub-drop', 'instance-sigkill'];

export interface FaultReport {
  kind: FaultKind;
  round: number;
  /** Milliseconds since the soak started (as every time in the report). */
  startMs: number;
  endMs: number;
  /** From the fault's end until every instance trusted its caches (keyward_cache_trusted == 1) and answered OK for a key in no cache; null: not within the limit. */
  recoveryMs: number | null;
  trustedAfterMs: number | null;
  okAfterMs: number | null;
  /** What the instances showed of the fault (trust lost, outbox lapses), per instance. */
  noticed: string;
  /** Verify errors whose call overlapped the fault's window, by code. */
  verifyErrors: Record<string, number>;
  adminErrors: Record<string, number>;
  /** End of the window in which errors are allowed. */
  allowanceEndMs: number;
}

export interface WrongVerdict {
  keyLabel: string;
  keyId: string;
  instance: number;
  via: 'unary' | 'stream';
  request: { clientIp: string; requiredScopes: string[] };
  answer: { code: string; keyId: string; scopes: string[]; valid: boolean };
  /** The answers any acceptable state would have given. */
  expected: string[];
  sentAtMs: number;
  answeredAtMs: number;
  /** The key's history: each change, when its call was sent and returned (null: never returned). */
  history: Array<{ what: string; sentAtMs: number; returnedAtMs: number | null; state: string }>;
  /** Index of the change that decides (the last one returned before the call was sent). */
  decidingChange: number;
  /** Faults under way when the call was sent or answered. */
  faults: string[];
}

export interface ErrorEvent {
  what: string;
  /** Allowed only while its instance is down (a malformed key is answered without I/O, whatever else fails). */
  neverAllowed?: boolean;
  instance: number;
  code: string;
  message: string;
  sentAtMs: number;
  answeredAtMs: number;
}

export interface UsageMismatch {
  keyLabel: string;
  keyId: string;
  exact: boolean;
  storedRequests: number | null;
  storedRefused: number | null;
  answeredIdentified: number;
  answeredOk: number;
  answeredRefused: number;
  reason: string;
}

export interface SoakReport {
  plannedMs: number;
  elapsedMs: number;
  calls: { unary: number; streamed: number };
  answers: Record<string, number>;
  wrongVerdicts: { count: number; details: WrongVerdict[] };
  errors: {
    verify: Record<string, number>;
    admin: Record<string, number>;
    /** Errors outside every fault window, or of a code other than UNAVAILABLE. */
    disallowedCount: number;
    disallowed: ErrorEvent[];
  };
  admin: { creates: number; scopeChanges: number; whitelistChanges: number; revokes: number; failedAttempts: number; unfinished: number };
  faults: FaultReport[];
  usage: {
    exactKeys: number;
    exactChecked: number;
    exactRequests: number;
    /** Keys also verified on the instance that was killed: stored ≤ answered is checked. */
    otherKeys: number;
    otherStoredRequests: number;
    otherAnsweredRequests: number;
    mismatches: UsageMismatch[];
  };
  exitCodes: Array<number | null>;
  /** Warnings and errors the instances logged, by event (or message). */
  logEvents: Record<string, number>;
  /** Where every instance's log was written (when the run did not pass, or SOAK_KEEP_LOGS=1). */
  logDir: string | undefined;
  /** Anything that kept the run from being complete (a failed start, a recovery that did not come...). */
  problems: string[];
  /**
   * No wrong verdict, no usage mismatch, no error outside the rules, a
   * recovery from every fault, and nothing else in `problems` (a run that
   * could not complete, an instance that did not exit 0 on SIGTERM).
   */
  passed: boolean;
}

// ---------------------------------------------------------------------------
// Constants of the load

const OK = VerifyCode.VERIFY_CODE_OK;
const CATALOG: readonly string[] = DEFAULT_SCOPES;
/** Whitelists from widest (empty: every address) to narrowest. */
const WHITELISTS: readonly string[][] = [[], ['10.1.0.0/16', '192.168.5.0/24'], ['10.1.2.0/24'], ['10.1.2.3']];
const CLIENT_IPS = ['10.1.2.3', '10.1.2.77', '10.1.9.9', '192.168.5.5', '203.0.113.9', ''];
const INSTANCES = 3;
/** The instance that is SIGKILLed: keys verified on it have no exact usage counts. */
const VICTIM = 2;
const UNARY_LANES_PER_INSTANCE = 2;
const STREAM_LANES_PER_INSTANCE = 3;
/** A lane sends at most one call per this many ms. */
const LANE_PERIOD_MS = 15;
const ERROR_PAUSE_MS = 50;
const CALL_TIMEOUT_MS = 20_000;
const ACTIVE_KEYS_PER_POOL = 8;
const REVOKED_KEPT_PER_POOL = 6;
const CHURN_PAUSE_MS = 120;
const ADMIN_RETRY_PAUSE_MS = 200;
const PG_SLOW_DELAY_MS = 600;
/** After a fault's recovery, errors are still allowed this long. */
const RECOVERY_ALLOWANCE_MS = 3_000;
const DETAILS_KEPT = 50;
/** Shares of the load that go to keys never stored, and to malformed keys. */
const GHOST_SHARE = 0.05;
const MALFORMED_SHARE = 0.02;

// ---------------------------------------------------------------------------
// The truth

interface KeyState {
  revoked: boolean;
  scopes: string[];
  whitelist: string[];
}

interface Change {
  what: string;
  state: KeyState;
  sentAt: number;
  /** Infinity until the call (or its retry) returned success. */
  returnedAt: number;
}

interface SoakKey {
  label: string;
  id: string;
  secret: string;
  accountId: string;
  pool: Pool;
  originalScopes: string[];
  history: Change[];
  whitelistIndex: number;
  /** Answers that identified the key (counted by keyward), OK ones, refused ones. */
  identified: number;
  ok: number;
  refused: number;
  /** Some call of it went to the victim, or ended in a client-side error: its count cannot be exact. */
  inexact: boolean;
}

/** ghost: well-formed, never stored (INVALID_KEY, negative caches); malformed: checksum fails (INVALID_KEY without I/O, never an error). */
type Pool = 'exact' | 'shared' | 'probe' | 'ghost' | 'malformed';
type StoredPool = 'exact' | 'shared' | 'probe';

function current(key: SoakKey): KeyState {
  return (key.history[key.history.length - 1] as Change).state;
}

function ipv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

function ipIn(ip: string, entry: string): boolean {
  const address = ipv4(ip);
  if (address === undefined) return false;
  const [base, bitsText] = entry.split('/');
  const network = ipv4(base as string);
  if (network === undefined) return false;
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  const size = 2 ** (32 - bits);
  return Math.floor(address / size) === Math.floor(network / size);
}

function expectedCode(state: KeyState, clientIp: string, required: readonly string[]): VerifyCode {
  if (state.revoked) return VerifyCode.VERIFY_CODE_REVOKED;
  if (state.whitelist.length > 0 && !state.whitelist.some((entry) => ipIn(clientIp, entry))) return VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED;
  if (required.some((scope) => !state.scopes.includes(scope))) return VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE;
  return OK;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join(',') === [...b].sort().join(',');
}

function describeState(state: KeyState): string {
  return `${state.revoked ? 'REVOKED ' : ''}scopes=[${state.scopes.join(',')}] whitelist=[${state.whitelist.join(',')}]`;
}

function codeName(code: VerifyCode): string {
  return VerifyCode[code] ?? String(code);
}

function statusName(code: number | string): string {
  if (typeof code === 'string') return code;
  return (status as unknown as Record<number, string>)[code] ?? String(code);
}

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)] as T;
}

function bump(counts: Record<string, number>, name: string, by = 1): void {
  counts[name] = (counts[name] ?? 0) + by;
}

/**
 * The soak's only use of bare time: pacing its load (a steady rate, not a
 * flood) and holding each fault for its planned duration. Time itself is
 * what these waits are about; every check waits on a condition instead.
 */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for `promise`, at most `ms` (the timer is cleared either way, so nothing is left pending). */
async function atMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([promise.then(() => undefined, () => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Instances and their clients

type Outcome = { response: VerifyResponse } | { errorCode: number | string; message: string };

interface Slot {
  index: number;
  env: Record<string, string>;
  server: ServerProcess;
  admin: AdminClient;
  verifier: VerifierClient;
  session: StreamSession | undefined;
  /** Generation of the process in this slot (a restart makes a new one). */
  generation: number;
}

/** One VerifyStream of an instance, shared by its stream lanes; replaced when it breaks. */
class StreamSession {
  private readonly stream: ClientDuplexStream<VerifyStreamRequest, VerifyStreamResponse>;
  private readonly pending = new Map<string, { resolve: (outcome: Outcome) => void; timer: NodeJS.Timeout }>();
  private sequence = 0;
  broken = false;
  readonly finished: Promise<void>;

  constructor(verifier: VerifierClient) {
    this.stream = verifier.raw.verifyStream(new Metadata());
    let finish: () => void = () => {};
    this.finished = new Promise<void>((resolve) => (finish = resolve));
    this.stream.on('data', (response: VerifyStreamResponse) => {
      const waiter = this.pending.get(response.requestId);
      if (waiter === undefined) return;
      this.pending.delete(response.requestId);
      clearTimeout(waiter.timer);
      const outcome = response.outcome;
      if (outcome?.$case === 'result') waiter.resolve({ response: outcome.value });
      else if (outcome?.$case === 'error') waiter.resolve({ errorCode: outcome.value.code, message: outcome.value.message });
      else waiter.resolve({ errorCode: 'EMPTY_STREAM_ANSWER', message: 'an answer with neither result nor error' });
    });
    const fail = (code: number | string, message: string): void => {
      this.broken = true;
      for (const [id, waiter] of this.pending) {
        clearTimeout(waiter.timer);
        waiter.resolve({ errorCode: code, message: `stream: ${message}` });
        this.pending.delete(id);
      }
    };
    this.stream.on('error', (error: ServiceError) => fail(error.code, error.details ?? error.message));
    this.stream.on('end', () => fail('STREAM_ENDED', 'the server ended the stream'));
    this.stream.on('status', () => {
      fail('STREAM_ENDED', 'the stream ended');
      finish();
    });
    this.stream.on('close', () => {
      fail('STREAM_ENDED', 'the stream closed');
      finish();
    });
  }

  call(request: VerifyRequest): Promise<Outcome> {
    const requestId = String(++this.sequence);
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        resolve({ errorCode: 'CLIENT_TIMEOUT', message: `no answer on the stream within ${CALL_TIMEOUT_MS} ms` });
      }, CALL_TIMEOUT_MS);
      this.pending.set(requestId, { resolve, timer });
      this.stream.write(VerifyStreamRequest.fromPartial({ requestId, ...request }));
    });
  }

  /** Ends the stream (the caller's side) and waits for the server to end it. */
  async close(): Promise<void> {
    if (!this.broken) this.stream.end();
    await atMost(this.finished, 10_000);
    if (!this.broken) this.stream.cancel();
  }
}

function unaryVerify(verifier: VerifierClient, request: VerifyRequest): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    verifier.raw.verify(request, new Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (error, response) => {
      if (error) resolve({ errorCode: error.code, message: error.details ?? error.message });
      else resolve({ response: response as VerifyResponse });
    });
  });
}

// ---------------------------------------------------------------------------
// The soak

interface ActiveFault {
  kind: FaultKind;
  round: number;
  start: number;
  end: number | undefined;
  allowanceEnd: number;
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const databaseUrl = options.databaseUrl ?? testDatabaseUrl();
  const t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const stamp = (): string => `[${(now() / 1000).toFixed(1).padStart(6)} s]`;
  const say = (line: string): void => log(`${stamp()} ${line}`);

  const report: SoakReport = {
    plannedMs: options.durationMs,
    elapsedMs: 0,
    calls: { unary: 0, streamed: 0 },
    answers: {},
    wrongVerdicts: { count: 0, details: [] },
    errors: { verify: {}, admin: {}, disallowedCount: 0, disallowed: [] },
    admin: { creates: 0, scopeChanges: 0, whitelistChanges: 0, revokes: 0, failedAttempts: 0, unfinished: 0 },
    faults: [],
    usage: { exactKeys: 0, exactChecked: 0, exactRequests: 0, otherKeys: 0, otherStoredRequests: 0, otherAnsweredRequests: 0, mismatches: [] },
    exitCodes: [],
    logEvents: {},
    logDir: undefined,
    problems: [],
    passed: false,
  };

  const accounts: Record<StoredPool, string> = {
    exact: `soak-exact-${randomUUID()}`,
    shared: `soak-shared-${randomUUID()}`,
    probe: `soak-probe-${randomUUID()}`,
  };
  const keys: SoakKey[] = [];
  const active: Record<'exact' | 'shared', SoakKey[]> = { exact: [], shared: [] };
  const revoked: Record<'exact' | 'shared', SoakKey[]> = { exact: [], shared: [] };
  const faults: ActiveFault[] = [];
  const verifyErrors: ErrorEvent[] = [];
  const adminErrors: ErrorEvent[] = [];
  let keyCounter = 0;
  const unstored = (pool: 'ghost' | 'malformed', secret: string, n: number): SoakKey => ({
    label: `${pool}#${n}`,
    id: '',
    secret,
    accountId: '',
    pool,
    originalScopes: ['jobs:read'],
    history: [],
    whitelistIndex: 0,
    identified: 0,
    ok: 0,
    refused: 0,
    inexact: true,
  });
  const format = new KeyFormat('fsm_live_', 'fsm_test_');
  // A few, so that the negative caches (in process and in Redis) get hits.
  const ghosts = Array.from({ length: 8 }, (_, n) => unstored('ghost', format.generate('live'), n));
  const malformed = Array.from({ length: 4 }, (_, n) => {
    const good = format.generate(n % 2 === 0 ? 'live' : 'test');
    const last = good.at(-1) === 'A' ? 'B' : 'A';
    return unstored('malformed', good.slice(0, -1) + last, n);
  });

  let redis: PrivateRedis | undefined;
  let proxy: FaultProxy | undefined;
  const slots: Slot[] = [];
  const retiredClients: Array<{ admin: AdminClient; verifier: VerifierClient; session: StreamSession | undefined }> = [];
  /** Every process started, for their logs. */
  const processes: Array<{ name: string; server: ServerProcess }> = [];
  let loadRunning = false;
  let churnRunning = false;
  const workers: Array<Promise<void>> = [];

  /** How long a recovery is waited for: a quarter of the run, from 10 to 30 s. */
  const recoveryLimitMs = Math.max(10_000, Math.min(30_000, options.durationMs / 4));
  const faultsAt = (from: number, to: number): string[] =>
    faults
      .filter((f) => f.start <= to && f.allowanceEnd >= from)
      .map((f) => `${f.kind}#${f.round}${f.end !== undefined && f.end < from ? ' (recovering)' : ''}`);

  // --- checking one answer --------------------------------------------------

  const check = (key: SoakKey, slot: number, via: 'unary' | 'stream', request: VerifyRequest, outcome: Outcome, sentAt: number, answeredAt: number): void => {
    if (via === 'unary') report.calls.unary++;
    else report.calls.streamed++;
    if ('errorCode' in outcome) {
      const code = statusName(outcome.errorCode);
      bump(report.errors.verify, code);
      verifyErrors.push({
        what: `verify ${via} ${key.label}`,
        neverAllowed: key.pool === 'malformed',
        instance: slot,
        code,
        message: outcome.message,
        sentAtMs: sentAt,
        answeredAtMs: answeredAt,
      });
      // UNAVAILABLE from an instance that is never killed is the server's own (no use counted); anything else may have been counted.
      if (code !== 'UNAVAILABLE') key.inexact = true;
      return;
    }
    const answer = outcome.response;
    bump(report.answers, codeName(answer.code));
    if (answer.code !== VerifyCode.VERIFY_CODE_INVALID_KEY && answer.code !== VerifyCode.VERIFY_CODE_MISSING_KEY) {
      key.identified++;
      if (answer.code === OK) key.ok++;
      else key.refused++;
    }
    if (key.pool === 'ghost' || key.pool === 'malformed') {
      if (answer.code === VerifyCode.VERIFY_CODE_INVALID_KEY && answer.keyId === '' && !answer.valid && answer.scopes.length === 0) return;
      report.wrongVerdicts.count++;
      const wrong: WrongVerdict = {
        keyLabel: key.label,
        keyId: '',
        instance: slot,
        via,
        request: { clientIp: request.clientIp, requiredScopes: [...request.requiredScopes] },
        answer: { code: codeName(answer.code), keyId: answer.keyId, scopes: [...answer.scopes], valid: answer.valid },
        expected: ['VERIFY_CODE_INVALID_KEY (no key)'],
        sentAtMs: Math.round(sentAt),
        answeredAtMs: Math.round(answeredAt),
        history: [],
        decidingChange: -1,
        faults: faultsAt(sentAt, answeredAt),
      };
      if (report.wrongVerdicts.details.length < DETAILS_KEPT) report.wrongVerdicts.details.push(wrong);
      say(`WRONG VERDICT ${wrong.answer.code} on instance ${slot} (${via}) for ${key.label}, a key that ${key.pool === 'ghost' ? 'was never stored' : 'is malformed'}`);
      return;
    }
    const history = key.history;
    let decided = 0;
    for (let i = 0; i < history.length; i++) if ((history[i] as Change).returnedAt < sentAt) decided = i;
    let last = decided;
    for (let i = decided + 1; i < history.length; i++) if ((history[i] as Change).sentAt < answeredAt) last = i;
    const acceptable = history.slice(decided, last + 1);
    const expected = acceptable.map((change) => expectedCode(change.state, request.clientIp, request.requiredScopes));
    const right = acceptable.some(
      (change, i) =>
        expected[i] === answer.code && answer.keyId === key.id && answer.valid === (answer.code === OK) && sameSet(answer.scopes, change.state.scopes),
    );
    if (right) return;
    report.wrongVerdicts.count++;
    const wrong: WrongVerdict = {
      keyLabel: key.label,
      keyId: key.id,
      instance: slot,
      via,
      request: { clientIp: request.clientIp, requiredScopes: [...request.requiredScopes] },
      answer: { code: codeName(answer.code), keyId: answer.keyId, scopes: [...answer.scopes], valid: answer.valid },
      expected: acceptable.map((change, i) => `${codeName(expected[i] as VerifyCode)} scopes=[${change.state.scopes.join(',')}]`),
      sentAtMs: Math.round(sentAt),
      answeredAtMs: Math.round(answeredAt),
      history: history.map((change) => ({
        what: change.what,
        sentAtMs: Math.round(change.sentAt),
        returnedAtMs: Number.isFinite(change.returnedAt) ? Math.round(change.returnedAt) : null,
        state: describeState(change.state),
      })),
      decidingChange: decided,
      faults: faultsAt(sentAt, answeredAt),
    };
    if (report.wrongVerdicts.details.length < DETAILS_KEPT) report.wrongVerdicts.details.push(wrong);
    say(
      `WRONG VERDICT ${wrong.answer.code} on instance ${slot} (${via}) for ${key.label} ip=${request.clientIp || '-'} required=[${request.requiredScopes.join(',')}]; ` +
        `expected ${wrong.expected.join(' or ')}; deciding change: ${history[decided]?.what} returned ${((sentAt - (history[decided]?.returnedAt ?? 0)) | 0)} ms before the call; faults: ${wrong.faults.join(',') || 'none'}`,
    );
  };

  const requestFor = (key: SoakKey): VerifyRequest => {
    const required: string[] = [];
    const wanted = Math.floor(Math.random() * 3);
    for (let i = 0; i < wanted; i++) {
      const scope = pick(key.originalScopes);
      if (!required.includes(scope)) required.push(scope);
    }
    if (Math.random() < 0.1) {
      const other = CATALOG.filter((s) => !key.originalScopes.includes(s));
      if (other.length > 0) required.push(pick(other));
    }
    return VerifyRequest.fromPartial({ key: key.secret, clientIp: pick(CLIENT_IPS), requiredScopes: required });
  };

  const verifyOnce = async (slot: Slot, via: 'unary' | 'stream', key: SoakKey, request: VerifyRequest = requestFor(key)): Promise<Outcome> => {
    if (slot.index === VICTIM) key.inexact = true;
    const sentAt = now();
    let outcome: Outcome;
    if (via === 'unary') outcome = await unaryVerify(slot.verifier, request);
    else {
      if (slot.session === undefined || slot.session.broken) slot.session = new StreamSession(slot.verifier);
      outcome = await slot.session.call(request);
    }
    check(key, slot.index, via, request, outcome, sentAt, now());
    return outcome;
  };

  const loadKeyFor = (slot: number): SoakKey | undefined => {
    const roll = Math.random();
    if (roll < GHOST_SHARE) return pick(ghosts);
    if (roll < GHOST_SHARE + MALFORMED_SHARE) return pick(malformed);
    const pool = slot === VICTIM || Math.random() < 0.5 ? 'shared' : 'exact';
    const useRevoked = Math.random() < 0.3 && revoked[pool].length > 0;
    const from = useRevoked ? revoked[pool] : active[pool];
    return from.length === 0 ? undefined : pick(from);
  };

  const lane = async (slotIndex: number, via: 'unary' | 'stream'): Promise<void> => {
    while (loadRunning) {
      const started = performance.now();
      const key = loadKeyFor(slotIndex);
      if (key === undefined) {
        await sleep(LANE_PERIOD_MS);
        continue;
      }
      const outcome = await verifyOnce(slots[slotIndex] as Slot, via, key);
      const spent = performance.now() - started;
      const pause = 'errorCode' in outcome ? ERROR_PAUSE_MS : LANE_PERIOD_MS - spent;
      if (pause > 0) await sleep(pause);
    }
  };

  // --- admin changes ----------------------------------------------------------

  /** Calls `attempt` on random instances until it succeeds (or churn stops); the change is in flight meanwhile. */
  const adminCall = async <T>(what: string, attempt: (admin: AdminClient) => Promise<T>, giveUp: () => boolean): Promise<T | undefined> => {
    for (;;) {
      const slot = pick(slots);
      const sentAt = now();
      try {
        return await attempt(slot.admin);
      } catch (error) {
        const serviceError = error as ServiceError;
        const code = statusName(serviceError.code ?? 'NOT_A_GRPC_ERROR');
        report.admin.failedAttempts++;
        bump(report.errors.admin, code);
        adminErrors.push({ what, instance: slot.index, code, message: serviceError.details ?? String(error), sentAtMs: sentAt, answeredAtMs: now() });
        if (giveUp()) return undefined;
        await sleep(ADMIN_RETRY_PAUSE_MS);
      }
    }
  };

  const stopChurn = (): boolean => !churnRunning;

  const createKey = async (pool: StoredPool, giveUp: () => boolean = stopChurn): Promise<SoakKey | undefined> => {
    const scopes = [...CATALOG].sort(() => Math.random() - 0.5).slice(0, 4);
    const whitelistIndex = pool === 'probe' ? 0 : Math.floor(Math.random() * 2);
    const label = `${pool}#${++keyCounter}`;
    const sentAt = now();
    const created = await adminCall(
      `create ${label}`,
      (admin) =>
        admin.createKey({
          accountId: accounts[pool],
          name: `soak ${label}`,
          environment: Environment.ENVIRONMENT_LIVE,
          scopes,
          ipWhitelist: WHITELISTS[whitelistIndex] as string[],
        }),
      giveUp,
    );
    if (created === undefined) return undefined;
    report.admin.creates++;
    const apiKey = created.key;
    const key: SoakKey = {
      label,
      id: apiKey?.id as string,
      secret: created.secret,
      accountId: accounts[pool],
      pool,
      originalScopes: [...(apiKey?.scopes ?? scopes)],
      history: [
        { what: 'CreateKey', state: { revoked: false, scopes: [...(apiKey?.scopes ?? scopes)], whitelist: [...(apiKey?.ipWhitelist ?? [])] }, sentAt, returnedAt: now() },
      ],
      whitelistIndex,
      identified: 0,
      ok: 0,
      refused: 0,
      inexact: false,
    };
    keys.push(key);
    return key;
  };

  /** Applies one change to `key`: in its history from the moment it is sent, returned once a call succeeds. */
  const change = async (key: SoakKey, what: string, state: KeyState, call: (admin: AdminClient) => Promise<unknown>): Promise<boolean> => {
    const entry: Change = { what, state, sentAt: now(), returnedAt: Number.POSITIVE_INFINITY };
    key.history.push(entry);
    const done = await adminCall(`${what} ${key.label}`, async (admin) => {
      await call(admin);
      return true;
    }, stopChurn);
    if (done === undefined) {
      report.admin.unfinished++;
      return false;
    }
    entry.returnedAt = now();
    return true;
  };

  const churnStep = async (pool: 'exact' | 'shared'): Promise<void> => {
    if (active[pool].length < ACTIVE_KEYS_PER_POOL) {
      const key = await createKey(pool);
      if (key !== undefined) active[pool].push(key);
      return;
    }
    const key = pick(active[pool]);
    const state = current(key);
    const roll = Math.random();
    if (roll < 0.35) {
      let scopes: string[];
      if (state.scopes.length > 1 && Math.random() < 0.8) {
        const removed = pick(state.scopes);
        scopes = state.scopes.filter((s) => s !== removed);
      } else {
        const missing = key.originalScopes.filter((s) => !state.scopes.includes(s));
        scopes = missing.length > 0 ? [...state.scopes, pick(missing)] : state.scopes;
      }
      scopes = CATALOG.filter((s) => scopes.includes(s));
      if (await change(key, `UpdateScopes [${scopes.join(',')}]`, { ...state, scopes }, (admin) => admin.updateScopes({ accountId: key.accountId, keyId: key.id, scopes }))) {
        report.admin.scopeChanges++;
      }
    } else if (roll < 0.7) {
      const index = key.whitelistIndex < WHITELISTS.length - 1 && Math.random() < 0.8 ? key.whitelistIndex + 1 : Math.floor(Math.random() * WHITELISTS.length);
      key.whitelistIndex = index;
      const whitelist = WHITELISTS[index] as string[];
      if (
        await change(key, `UpdateIpWhitelist [${whitelist.join(',')}]`, { ...state, whitelist }, (admin) =>
          admin.updateIpWhitelist({ accountId: key.accountId, keyId: key.id, ipWhitelist: whitelist }),
        )
      ) {
        report.admin.whitelistChanges++;
      }
    } else {
      if (await change(key, 'RevokeKey', { ...state, revoked: true }, (admin) => admin.revokeKey({ accountId: key.accountId, keyId: key.id }))) {
        report.admin.revokes++;
      }
      // Revoked (or in doubt): it leaves the active keys and stays under load for a while; a replacement comes next step.
      active[pool] = active[pool].filter((k) => k !== key);
      revoked[pool].push(key);
      if (revoked[pool].length > REVOKED_KEPT_PER_POOL) revoked[pool].shift();
    }
  };

  const churn = async (pool: 'exact' | 'shared'): Promise<void> => {
    while (churnRunning) {
      await churnStep(pool);
      await sleep(CHURN_PAUSE_MS);
    }
  };

  // --- metrics --------------------------------------------------------------

  const metricsOf = async (slot: Slot): Promise<Map<string, number> | undefined> => {
    try {
      return await scrapeMetrics(slot.server.metricsPort as number);
    } catch {
      return undefined;
    }
  };

  const counters = async (): Promise<Array<{ generation: number; lost: number; lapses: number; trusted: number }>> =>
    Promise.all(
      slots.map(async (slot) => {
        const m = await metricsOf(slot);
        return {
          generation: slot.generation,
          lost: m?.get('keyward_cache_trust_lost_total') ?? 0,
          lapses: m?.get('keyward_cache_outbox_lapses_total') ?? 0,
          trusted: m?.get('keyward_cache_trusted') ?? -1,
        };
      }),
    );

  const allTrusted = async (): Promise<boolean> => {
    const values = await Promise.all(slots.map(async (slot) => (await metricsOf(slot))?.get('keyward_cache_trusted') === 1));
    return values.every(Boolean);
  };

  // --- instances --------------------------------------------------------------

  const startSlot = async (index: number, env: Record<string, string>, generation: number): Promise<Slot> => {
    const server = await ServerProcess.start(env, 20_000);
    processes.push({ name: `instance-${index}-gen${generation}`, server });
    return { index, env, server, admin: new AdminClient(server.address), verifier: new VerifierClient(server.address), session: undefined, generation };
  };

  // --- faults -----------------------------------------------------------------

  const runFault = async (kind: FaultKind, round: number, holdMs: number): Promise<void> => {
    const r = redis as PrivateRedis;
    const p = proxy as FaultProxy;
    // Keys in no cache, one per instance, for the "answers OK again" probe after the fault.
    const probes: SoakKey[] = [];
    const probeDeadline = now() + recoveryLimitMs;
    for (let i = 0; i < INSTANCES; i++) {
      const probe = await createKey('probe', () => now() > probeDeadline);
      if (probe === undefined) throw new Error(`${kind} (round ${round}): no probe key could be created within ${recoveryLimitMs} ms`);
      probes.push(probe);
    }
    const before = await counters();
    const fault: ActiveFault = { kind, round, start: now(), end: undefined, allowanceEnd: Number.POSITIVE_INFINITY };
    faults.push(fault);
    say(`fault ${kind} (round ${round}) begins`);
    let noticedExtra = '';
    switch (kind) {
      case 'redis-stop': {
        await r.kill();
        await waitUntil('every instance stops trusting its caches without Redis', async () => (await counters()).every((c) => c.trusted === 0), {
          timeoutMs: 10_000,
          intervalMs: 50,
        }).catch(() => {
          noticedExtra = ' (not every instance showed untrusted caches)';
        });
        await sleep(holdMs);
        fault.end = now();
        await r.restart();
        break;
      }
      case 'pg-unreachable': {
        p.refuse();
        p.cut();
        await sleep(holdMs / 2);
        // A key in no cache cannot be answered now: UNAVAILABLE, never a verdict made up (checked like every answer).
        const outcomes = await Promise.all(probes.map((probe, i) => verifyOnce(slots[i] as Slot, 'unary', probe, VerifyRequest.fromPartial({ key: probe.secret, clientIp: '10.1.2.3' }))));
        noticedExtra = ` (keys in no cache, during the outage: ${outcomes.map((o) => ('errorCode' in o ? statusName(o.errorCode) : codeName(o.response.code))).join(', ')})`;
        await sleep(holdMs / 2);
        fault.end = now();
        p.pass();
        break;
      }
      case 'pg-slow': {
        const delayed = p.waitDelayed(1, 10_000);
        p.delayResponses(PG_SLOW_DELAY_MS);
        await delayed.catch(() => {
          noticedExtra = ' (no delayed answer seen)';
        });
        await sleep(holdMs);
        fault.end = now();
        p.delayResponses(0);
        break;
      }
      case 'pubsub-drop': {
        const control = r.client();
        control.on('error', () => {});
        try {
          const kills = 3;
          const killed: string[] = [];
          for (let i = 0; i < kills; i++) {
            killed.push(String(await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub')));
            if (i < kills - 1) await sleep(holdMs / (kills - 1));
          }
          noticedExtra = ` (pub/sub connections killed: ${killed.join(', ')})`;
        } finally {
          control.disconnect();
        }
        fault.end = now();
        break;
      }
      case 'instance-sigkill': {
        const victim = slots[VICTIM] as Slot;
        victim.server.signal('SIGKILL');
        await victim.server.waitForExit();
        await sleep(Math.min(holdMs, 2_000));
        fault.end = now();
        const replacement = await startSlot(VICTIM, victim.env, victim.generation + 1);
        slots[VICTIM] = replacement;
        retiredClients.push({ admin: victim.admin, verifier: victim.verifier, session: victim.session });
        break;
      }
    }
    const end = fault.end as number;
    say(`fault ${kind} (round ${round}) ends after ${((end - fault.start) / 1000).toFixed(1)} s; waiting for recovery`);
    const after = await counters();
    const noticed = after
      .map((c, i) => {
        const b = before[i] as (typeof before)[number];
        if (c.generation !== b.generation) return `#${i}: restarted`;
        return `#${i}: trust lost +${c.lost - b.lost}, outbox lapses +${c.lapses - b.lapses}`;
      })
      .join('; ');
    // Recovery: every instance trusts its caches, and each answers OK for a key in no cache (a PostgreSQL lookup).
    let trustedAt: number | null = null;
    let okAt: number | null = null;
    const trusted = waitUntil('every instance trusts its caches again', allTrusted, { timeoutMs: recoveryLimitMs, intervalMs: 50 }).then(
      () => (trustedAt = now()),
      () => undefined,
    );
    const answering = Promise.all(
      probes.map(async (probe, i) => {
        await waitUntil(
          `instance ${i} answers OK`,
          async () => {
            const outcome = await verifyOnce(slots[i] as Slot, 'unary', probe, VerifyRequest.fromPartial({ key: probe.secret, clientIp: '10.1.2.3' }));
            return 'response' in outcome && outcome.response.code === OK;
          },
          { timeoutMs: recoveryLimitMs, intervalMs: 50 },
        );
      }),
    ).then(
      () => (okAt = now()),
      () => undefined,
    );
    await Promise.all([trusted, answering]);
    const recovered = trustedAt !== null && okAt !== null ? Math.max(trustedAt, okAt) : null;
    fault.allowanceEnd = (recovered ?? now()) + RECOVERY_ALLOWANCE_MS;
    const entry: FaultReport = {
      kind,
      round,
      startMs: Math.round(fault.start),
      endMs: Math.round(end),
      recoveryMs: recovered === null ? null : Math.round(recovered - end),
      trustedAfterMs: trustedAt === null ? null : Math.round(trustedAt - end),
      okAfterMs: okAt === null ? null : Math.round(okAt - end),
      noticed: noticed + noticedExtra,
      verifyErrors: {},
      adminErrors: {},
      allowanceEndMs: Math.round(fault.allowanceEnd),
    };
    report.faults.push(entry);
    if (recovered === null) report.problems.push(`${kind} (round ${round}): no recovery within ${recoveryLimitMs} ms (trusted: ${entry.trustedAfterMs}, OK: ${entry.okAfterMs})`);
    say(
      `fault ${kind} (round ${round}) recovered: ${entry.recoveryMs === null ? 'NOT within the limit' : `${entry.recoveryMs} ms`} ` +
        `(trusted after ${entry.trustedAfterMs ?? '-'} ms, OK after ${entry.okAfterMs ?? '-'} ms); ${entry.noticed}`,
    );
  };

  // --- the run ----------------------------------------------------------------

  let progress: NodeJS.Timeout | undefined;
  let loadStart = 0;
  try {
    redis = await PrivateRedis.start();
    const target = new URL(databaseUrl);
    proxy = await FaultProxy.start(target.hostname, Number(target.port || 5432));
    const proxied = new URL(databaseUrl);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    const env: Record<string, string> = {
      DATABASE_URL: proxied.toString(),
      REDIS_URL: redis.url,
      KEYWARD_REDIS_PREFIX: `soak-${randomUUID().slice(0, 8)}:`,
      KEYWARD_METRICS_ADDR: '127.0.0.1:0',
      KEYWARD_MIGRATE_ON_START: 'false',
    };
    say(`starting ${INSTANCES} instances (redis :${redis.port}, postgres through proxy :${proxy.port})`);
    const started = await Promise.allSettled(Array.from({ length: INSTANCES }, (_, i) => startSlot(i, env, 0)));
    for (const result of started) if (result.status === 'fulfilled') slots.push(result.value);
    const failed = started.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    await waitUntil('every instance trusts its caches', allTrusted, { timeoutMs: 20_000, intervalMs: 50 });

    churnRunning = true;
    for (const pool of ['exact', 'shared'] as const) {
      while (active[pool].length < ACTIVE_KEYS_PER_POOL) {
        const key = await createKey(pool);
        if (key !== undefined) active[pool].push(key);
      }
    }
    say(`${keys.length} keys created; load starts`);
    loadStart = now();
    loadRunning = true;
    for (let i = 0; i < INSTANCES; i++) {
      for (let n = 0; n < UNARY_LANES_PER_INSTANCE; n++) workers.push(lane(i, 'unary'));
      for (let n = 0; n < STREAM_LANES_PER_INSTANCE; n++) workers.push(lane(i, 'stream'));
    }
    const churners = [churn('exact'), churn('shared')];
    progress = setInterval(() => {
      say(
        `progress: ${report.calls.unary} unary + ${report.calls.streamed} streamed calls, ${report.wrongVerdicts.count} wrong verdicts, ` +
          `errors ${JSON.stringify(report.errors.verify)}, admin: ${report.admin.creates} creates, ${report.admin.scopeChanges} scopes, ` +
          `${report.admin.whitelistChanges} whitelists, ${report.admin.revokes} revokes`,
      );
    }, 10_000);

    // The schedule: warm-up, then each fault kind in turn (rounds of all five), each followed by its recovery and calm.
    const rounds = Math.max(1, Math.floor(options.durationMs / 90_000));
    const warmupMs = Math.min(10_000, options.durationMs * 0.1);
    const tailMs = Math.min(5_000, options.durationMs * 0.05);
    const slotMs = (options.durationMs - warmupMs - tailMs) / (rounds * FAULT_KINDS.length);
    const holdMs = Math.max(1_500, Math.min(6_000, slotMs * 0.4));
    say(`schedule: ${rounds} round(s) of ${FAULT_KINDS.join(', ')}; ${Math.round(slotMs)} ms per fault, held ${Math.round(holdMs)} ms`);
    await sleep(warmupMs);
    for (let round = 1; round <= rounds; round++) {
      for (const [n, kind] of FAULT_KINDS.entries()) {
        const slotStart = loadStart + warmupMs + ((round - 1) * FAULT_KINDS.length + n) * slotMs;
        if (now() < slotStart) await sleep(slotStart - now());
        await runFault(kind, round, holdMs);
      }
    }
    const endOfLoad = loadStart + options.durationMs;
    if (now() < endOfLoad) await sleep(endOfLoad - now());

    say('load stops');
    loadRunning = false;
    await Promise.all(workers);
    churnRunning = false;
    await atMost(Promise.all(churners), 30_000);
    clearInterval(progress);
    progress = undefined;
    report.elapsedMs = Math.round(now() - loadStart);
    for (const slot of slots) await slot.session?.close();

    // Clean stop (SIGTERM): every counted use is written before the process exits.
    say('stopping the instances (SIGTERM)');
    for (const slot of slots) {
      slot.admin.close();
      slot.verifier.close();
    }
    report.exitCodes = await Promise.all(slots.map((slot) => slot.server.stop()));
    for (const [i, code] of report.exitCodes.entries()) if (code !== 0) report.problems.push(`instance ${i} exited ${code} on SIGTERM`);

    // Usage counts, read through ListKeys from an instance started afterwards (directly on PostgreSQL).
    const reader = await ServerProcess.start({ DATABASE_URL: databaseUrl, KEYWARD_MIGRATE_ON_START: 'false' }, 20_000);
    const readerAdmin = new AdminClient(reader.address);
    try {
      const stored = new Map<string, { requests: number; refused: number }>();
      for (const accountId of Object.values(accounts)) {
        let pageToken = '';
        do {
          const page = await readerAdmin.listKeys({ accountId, includeRevoked: true, pageSize: 1000, pageToken });
          for (const apiKey of page.keys) stored.set(apiKey.id, { requests: Number(apiKey.requestCount), refused: Number(apiKey.refusedCount) });
          pageToken = page.nextPageToken;
        } while (pageToken !== '');
      }
      for (const key of keys) {
        const found = stored.get(key.id);
        const mismatch = (reason: string): void => {
          report.usage.mismatches.push({
            keyLabel: key.label,
            keyId: key.id,
            exact: !key.inexact,
            storedRequests: found?.requests ?? null,
            storedRefused: found?.refused ?? null,
            answeredIdentified: key.identified,
            answeredOk: key.ok,
            answeredRefused: key.refused,
            reason,
          });
        };
        if (found === undefined) {
          mismatch('not listed by ListKeys');
          continue;
        }
        if (!key.inexact) {
          report.usage.exactKeys++;
          report.usage.exactChecked++;
          report.usage.exactRequests += found.requests;
          if (found.requests !== key.identified) mismatch(`request_count ${found.requests} != ${key.identified} answers that identified the key`);
          else if (found.requests - found.refused !== key.ok) mismatch(`request_count - refused_count ${found.requests - found.refused} != ${key.ok} OK answers`);
        } else {
          report.usage.otherKeys++;
          report.usage.otherStoredRequests += found.requests;
          report.usage.otherAnsweredRequests += key.identified;
          // Uses counted by the killed instance are lost; none can be counted that was not answered.
          if (found.requests > key.identified) mismatch(`request_count ${found.requests} > ${key.identified} answers that identified the key`);
          else if (found.refused > key.refused) mismatch(`refused_count ${found.refused} > ${key.refused} refused answers`);
        }
      }
    } finally {
      readerAdmin.close();
      await reader.stop();
    }
  } catch (error) {
    report.problems.push(`the soak stopped early: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
    say(`ERROR: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    if (progress !== undefined) clearInterval(progress);
    loadRunning = false;
    churnRunning = false;
    proxy?.pass();
    proxy?.delayResponses(0);
    await atMost(Promise.all(workers), CALL_TIMEOUT_MS + 1_000);
    for (const slot of slots) {
      slot.admin.close();
      slot.verifier.close();
      if (slot.server.child.exitCode === null && slot.server.child.signalCode === null) {
        slot.server.signal('SIGKILL');
        await slot.server.waitForExit();
      }
    }
    for (const retired of retiredClients) {
      retired.admin.close();
      retired.verifier.close();
    }
    await proxy?.close();
    await redis?.stop();
  }

  // The instances' warnings and errors, by event.
  for (const { server } of processes) {
    for (const line of server.log.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const parsed = JSON.parse(line) as { level?: number; event?: string; msg?: string };
        if ((parsed.level ?? 0) >= 40) bump(report.logEvents, parsed.event ?? parsed.msg ?? 'unnamed');
      } catch {
        // not a log line of keyward's
      }
    }
  }

  // Errors: allowed only while a fault (until its recovery plus the allowance) overlapped the call, and only UNAVAILABLE.
  // The latest fault whose window the call overlapped (windows may overlap when a recovery is late).
  const windowOf = (from: number, to: number): ActiveFault | undefined => faults.filter((f) => f.start <= to && f.allowanceEnd >= from).pop();
  for (const event of [...verifyErrors, ...adminErrors]) {
    const fault = windowOf(event.sentAtMs, event.answeredAtMs);
    const isVerify = event.what.startsWith('verify');
    if (fault !== undefined) {
      const entry = report.faults.find((f) => f.kind === fault.kind && f.round === fault.round);
      if (entry !== undefined) bump(isVerify ? entry.verifyErrors : entry.adminErrors, event.code);
    }
    // A malformed key is answered without I/O: its calls may only fail when its instance is down (killed).
    const instanceDown = fault?.kind === 'instance-sigkill' && event.instance === VICTIM;
    if (fault !== undefined && event.code === 'UNAVAILABLE' && (event.neverAllowed !== true || instanceDown)) continue;
    report.errors.disallowedCount++;
    if (report.errors.disallowed.length < DETAILS_KEPT) {
      report.errors.disallowed.push({
        what: event.what,
        instance: event.instance,
        code: event.code,
        message: event.message,
        sentAtMs: Math.round(event.sentAtMs),
        answeredAtMs: Math.round(event.answeredAtMs),
      });
    }
  }
  if (report.elapsedMs === 0) report.elapsedMs = Math.round(now() - loadStart);
  report.passed =
    report.problems.length === 0 &&
    report.wrongVerdicts.count === 0 &&
    report.usage.mismatches.length === 0 &&
    report.errors.disallowedCount === 0 &&
    report.faults.every((fault) => fault.recoveryMs !== null);
  // Every line the instances logged, in a folder of the run, when it did not pass (or SOAK_KEEP_LOGS=1).
  if (!report.passed || process.env.SOAK_KEEP_LOGS === '1') {
    try {
      const dir = mkdtempSync(path.join(tmpdir(), 'keyward-soak-'));
      for (const { name, server } of processes) writeFileSync(path.join(dir, `${name}.log`), server.log);
      report.logDir = dir;
    } catch (error) {
      report.problems.push(`the instances' logs could not be written: ${String(error)}`);
    }
  }
  return report;
}

// ---------------------------------------------------------------------------
// The summary

export function formatReport(report: SoakReport): string[] {
  const lines: string[] = [];
  const counts = (record: Record<string, number>): string =>
    Object.keys(record).length === 0
      ? 'none'
      : Object.entries(record)
          .sort((a, b) => b[1] - a[1])
          .map(([name, n]) => `${name} ${n}`)
          .join(', ');
  lines.push(`keyward soak: ${(report.elapsedMs / 1000).toFixed(1)} s of load (planned ${(report.plannedMs / 1000).toFixed(0)} s), 3 instances`);
  lines.push(`calls: ${report.calls.unary + report.calls.streamed} (unary ${report.calls.unary}, streamed ${report.calls.streamed})`);
  lines.push(`answers: ${counts(report.answers)}`);
  lines.push(
    `admin: ${report.admin.creates} creates, ${report.admin.scopeChanges} scope changes, ${report.admin.whitelistChanges} whitelist changes, ` +
      `${report.admin.revokes} revokes; ${report.admin.failedAttempts} failed attempts (retried), ${report.admin.unfinished} unfinished`,
  );
  lines.push(`wrong verdicts: ${report.wrongVerdicts.count}`);
  for (const wrong of report.wrongVerdicts.details) {
    lines.push(
      `  - ${wrong.answer.code} (scopes [${wrong.answer.scopes.join(',')}]) from instance ${wrong.instance} (${wrong.via}) for ${wrong.keyLabel} ${wrong.keyId}, ` +
        `ip ${wrong.request.clientIp || '(none)'}, required [${wrong.request.requiredScopes.join(',')}], sent at ${wrong.sentAtMs} ms, answered at ${wrong.answeredAtMs} ms; ` +
        `expected ${wrong.expected.join(' or ')}; faults: ${wrong.faults.join(',') || 'none'}`,
    );
    for (const [i, change] of wrong.history.entries()) {
      lines.push(
        `      ${i === wrong.decidingChange ? '*' : ' '} ${change.what}: sent ${change.sentAtMs} ms, returned ${change.returnedAtMs ?? 'never'} ms -> ${change.state}`,
      );
    }
  }
  lines.push(`verify errors by code: ${counts(report.errors.verify)}`);
  lines.push(`admin errors by code: ${counts(report.errors.admin)}`);
  lines.push(`errors not allowed (outside fault windows, or not UNAVAILABLE): ${report.errors.disallowedCount}`);
  for (const event of report.errors.disallowed) {
    lines.push(`  - ${event.what} on instance ${event.instance}: ${event.code} "${event.message}" (sent ${event.sentAtMs} ms, answered ${event.answeredAtMs} ms)`);
  }
  lines.push('faults (times in ms since the soak started; recovery measured from the fault\'s end):');
  for (const fault of report.faults) {
    lines.push(
      `  - ${fault.kind.padEnd(16)} round ${fault.round}: ${fault.startMs}-${fault.endMs} ms, recovery ${fault.recoveryMs === null ? 'NONE' : `${fault.recoveryMs} ms`} ` +
        `(trusted ${fault.trustedAfterMs ?? '-'} ms, OK ${fault.okAfterMs ?? '-'} ms); verify errors: ${counts(fault.verifyErrors)}; admin errors: ${counts(fault.adminErrors)}`,
    );
    lines.push(`      noticed: ${fault.noticed}`);
  }
  const u = report.usage;
  lines.push(
    `usage: ${u.exactChecked} keys verified only on instances stopped cleanly: request_count exact for ${u.exactChecked - u.mismatches.filter((m) => m.exact).length} ` +
      `(${u.exactRequests} uses); ${u.otherKeys} keys also verified on the killed instance: stored ${u.otherStoredRequests} <= answered ${u.otherAnsweredRequests}; ` +
      `mismatches: ${u.mismatches.length}`,
  );
  for (const m of u.mismatches) {
    lines.push(
      `  - ${m.keyLabel} ${m.keyId}: ${m.reason} (stored request_count ${m.storedRequests}, refused_count ${m.storedRefused}; answered ${m.answeredIdentified} identified, ${m.answeredOk} OK, ${m.answeredRefused} refused)`,
    );
  }
  lines.push(`exit codes on SIGTERM: ${report.exitCodes.join(', ') || '-'}`);
  lines.push(`instance warnings/errors logged, by event: ${counts(report.logEvents)}`);
  if (report.logDir !== undefined) lines.push(`instance logs: ${report.logDir}`);
  for (const problem of report.problems) lines.push(`problem: ${problem}`);
  const unrecovered = report.faults.filter((f) => f.recoveryMs === null).length;
  lines.push(
    `result: ${report.passed ? 'PASSED' : 'FAILED'}: ${report.wrongVerdicts.count} wrong verdicts, ${u.mismatches.length} usage mismatches, ` +
      `${report.errors.disallowedCount} errors not allowed, ${unrecovered} of ${report.faults.length} faults without recovery, ${report.problems.length} problems`,
  );
  return lines;
}
