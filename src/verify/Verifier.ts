import { LRUCache } from 'lru-cache';
import type { KeyLookup } from '../cache/KeyLookup';
import { Environment as ProtoEnvironment, type VerifyRequest, type VerifyResponse } from '../gen/keyward/v1/keyward';
import { invalidArgument } from '../errors';
import { LIMITS } from '../keys/fields';
import { type KeyFormat, hashSecret } from '../keys/KeyFormat';
import type { ScopeCatalog } from '../keys/scopes';
import type { VerifiableKey } from '../keys/VerifiableKey';
import { INVALID_KEY, MISSING_KEY, OK, type Verdict, decideVerdict } from '../keys/verdict';
import { preEncoded } from './preEncoded';

/** Told of every Verify that identified a stored key, whatever its verdict (usage counting). */
export interface UseRecorder {
  /**
   * `clientIp` is the caller's string, at most LIMITS.clientIpLength
   * characters: the recorder keeps only its canonical form
   * (src/keys/clientIp.ts), made when it writes, not on every call.
   */
  recordUse(key: VerifiableKey, clientIp: string, nowMs: number, verdict: Verdict): void;
}

/** Told of every verdict (metrics by code). */
export type VerdictObserver = (verdict: Verdict) => void;

const unidentified = (verdict: Verdict): VerifyResponse =>
  preEncoded({
    valid: false,
    code: verdict.code,
    httpStatus: verdict.httpStatus,
    keyId: '',
    accountId: '',
    environment: ProtoEnvironment.ENVIRONMENT_UNSPECIFIED,
    scopes: [],
    missingScopes: [],
    keyName: '',
    metadata: {},
  });
const MISSING_KEY_RESPONSE = unidentified(MISSING_KEY);
const INVALID_KEY_RESPONSE = unidentified(INVALID_KEY);

/**
 * The Verify path, transport-free: gate on shape and checksum (no I/O), hash,
 * look up (synchronously on an in-process hit), decide. Every step here is
 * paid on every REST request of every customer: keep it short.
 */
/**
 * Keys whose OK answer is kept encoded. A key's OK answer never varies, and
 * encoding it costs about 2 µs, a twentieth of a whole call; but holding it
 * costs some 300 bytes, too much for every cached key, so only the keys
 * verified most recently keep theirs (the traffic of a REST API is skewed:
 * these serve most calls).
 */
const ANSWERS_KEPT = 10_000;

export class Verifier {
  private readonly okAnswers = new LRUCache<VerifiableKey, VerifyResponse>({ max: ANSWERS_KEPT });

  constructor(
    private readonly format: KeyFormat,
    private readonly catalog: ScopeCatalog,
    private readonly lookup: KeyLookup,
    private readonly uses: UseRecorder | undefined,
    private readonly observe: VerdictObserver = () => {},
  ) {}

  /**
   * Answers a VerifyRequest. Throws (or rejects with) INVALID_ARGUMENT for an
   * unknown required scope and UNAVAILABLE when the key is in no cache and
   * Postgres cannot be reached; every refusal is an answer, not an error.
   */
  verify(request: VerifyRequest): VerifyResponse | Promise<VerifyResponse> {
    this.catalog.checkKnown('required_scopes', request.requiredScopes, LIMITS.requiredScopes);
    if (request.clientIp.length > LIMITS.clientIpLength) {
      throw invalidArgument('client_ip', `${request.clientIp.length} characters`, `must be an IP address of at most ${LIMITS.clientIpLength} characters`);
    }
    const raw = request.key;
    if (raw.length === 0) {
      this.observe(MISSING_KEY);
      return MISSING_KEY_RESPONSE;
    }
    if (this.format.check(raw) === undefined) {
      this.observe(INVALID_KEY);
      return INVALID_KEY_RESPONSE;
    }
    const found = this.lookup.find(hashSecret(raw));
    if (found instanceof Promise) return found.then((key) => this.answer(key, request));
    return this.answer(found, request);
  }

  private answer(key: VerifiableKey | undefined, request: VerifyRequest): VerifyResponse {
    if (key === undefined) {
      this.observe(INVALID_KEY);
      return INVALID_KEY_RESPONSE;
    }
    const now = Date.now();
    const verdict = decideVerdict(key, request.clientIp, request.requiredScopes, now);
    this.observe(verdict);
    this.uses?.recordUse(key, request.clientIp, now, verdict);
    if (verdict === OK) {
      let answer = this.okAnswers.get(key);
      if (answer === undefined) this.okAnswers.set(key, (answer = preEncoded(respond(key, verdict))));
      return answer;
    }
    return respond(key, verdict);
  }
}

/** Verify's answer about an identified key. */
function respond(key: VerifiableKey, verdict: Verdict): VerifyResponse {
  return {
    valid: verdict.httpStatus === 200,
    code: verdict.code,
    httpStatus: verdict.httpStatus,
    keyId: key.id,
    accountId: key.accountId,
    environment: key.environment === 'live' ? ProtoEnvironment.ENVIRONMENT_LIVE : ProtoEnvironment.ENVIRONMENT_TEST,
    scopes: key.scopes as string[],
    missingScopes: verdict.missingScopes as string[],
    keyName: key.name,
    metadata: key.metadata as Record<string, string>,
  };
}
