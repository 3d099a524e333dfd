import { VerifyCode } from '../gen/keyward/v1/keyward';
import type { VerifiableKey } from './VerifiableKey';

/**
 * Why Verify accepts or refuses a key. The checks run in this order and the
 * first that fails decides:
 *
 * 1. no key presented                          → MISSING_KEY         401
 * 2. malformed or checksum fails (no I/O)      → INVALID_KEY         401  (KeyFormat.check)
 * 3. well-formed but not stored                → INVALID_KEY         401
 * 4. revoked                                   → REVOKED             401
 * 5. disabled (DisableKey, until EnableKey)    → DISABLED            401
 * 6. past expires_at                           → EXPIRED             401
 * 7. client address outside a non-empty
 *    whitelist (or missing or unparseable)     → IP_NOT_ALLOWED      403
 * 8. a required scope not granted              → INSUFFICIENT_SCOPE  403, with missing_scopes
 *
 * Revoked comes before disabled because it is final and disabled is not: a
 * key disabled, then revoked, must say the stronger thing. Disabled comes
 * before expired because it is the state an admin set on purpose, and the
 * one they can undo: telling a caller "disabled" points at EnableKey, where
 * "expired" would point at a new key.
 *
 * Steps 1 to 3 are decided before a key is identified; `decideVerdict` holds 4 to 8.
 */
export interface Verdict {
  readonly code: VerifyCode;
  readonly httpStatus: 200 | 401 | 403;
  readonly missingScopes: readonly string[];
}

const NONE: readonly string[] = Object.freeze([]);
const verdict = (code: VerifyCode, httpStatus: 200 | 401 | 403): Verdict => Object.freeze({ code, httpStatus, missingScopes: NONE });

export const MISSING_KEY = verdict(VerifyCode.VERIFY_CODE_MISSING_KEY, 401);
export const INVALID_KEY = verdict(VerifyCode.VERIFY_CODE_INVALID_KEY, 401);
export const REVOKED = verdict(VerifyCode.VERIFY_CODE_REVOKED, 401);
export const DISABLED = verdict(VerifyCode.VERIFY_CODE_DISABLED, 401);
export const EXPIRED = verdict(VerifyCode.VERIFY_CODE_EXPIRED, 401);
export const IP_NOT_ALLOWED = verdict(VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED, 403);
export const OK = verdict(VerifyCode.VERIFY_CODE_OK, 200);

/** Steps 4 to 8 for an identified key, at `nowMs`. Pure. */
export function decideVerdict(key: VerifiableKey, clientIp: string, requiredScopes: readonly string[], nowMs: number): Verdict {
  if (key.revokedAt !== null) return REVOKED;
  if (key.disabledAt !== null) return DISABLED;
  if (key.expiresAt !== null && key.expiresAt <= nowMs) return EXPIRED;
  if (!key.allowsIp(clientIp)) return IP_NOT_ALLOWED;
  let missing: string[] | undefined;
  for (const scope of requiredScopes) {
    if (!key.scopes.includes(scope)) (missing ??= []).push(scope);
  }
  if (missing === undefined) return OK;
  return { code: VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE, httpStatus: 403, missingScopes: [...new Set(missing)] };
}
