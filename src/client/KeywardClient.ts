import { type CallOptions, type Client, Metadata, type ServiceError } from '@grpc/grpc-js';
import {
  CreateKeyRequest,
  type CreateKeyResponse,
  DisableKeyRequest,
  type DisableKeyResponse,
  EnableKeyRequest,
  type EnableKeyResponse,
  GetKeyRequest,
  type GetKeyResponse,
  KeyAdminServiceClient,
  KeyVerifierServiceClient,
  ListKeyEventsRequest,
  type ListKeyEventsResponse,
  ListKeysRequest,
  type ListKeysResponse,
  RevokeKeyRequest,
  type RevokeKeyResponse,
  RotateKeyRequest,
  type RotateKeyResponse,
  UpdateIpWhitelistRequest,
  type UpdateIpWhitelistResponse,
  UpdateKeyRequest,
  type UpdateKeyResponse,
  UpdateScopesRequest,
  type UpdateScopesResponse,
  VerifyRequest,
  type VerifyResponse,
} from '../gen/keyward/v1/keyward';
import { type KeywardTlsOptions, createChannelCredentials } from './channelCredentials';
import { withRetries } from './retryPolicy';
import { VerifyStreamSession } from './VerifyStreamSession';

/** Deadline of a call (retries included), unless the options or the call say otherwise. */
export const DEFAULT_DEADLINE_MS = 2_000;
/** Retries of a safe call (Verify, GetKey, ListKeys, ListKeyEvents) after UNAVAILABLE or DEADLINE_EXCEEDED. */
export const DEFAULT_RETRIES = 2;

export interface KeywardClientOptions {
  /** The server, `host:port`. */
  address: string;
  /** `false` or absent: plaintext. Otherwise TLS; with `cert` and `key`, mutual TLS. */
  tls?: false | KeywardTlsOptions;
  /** Sent as `authorization: Bearer <adminToken>` on every admin call. */
  adminToken?: string;
  /** Sent as `authorization: Bearer <verifierToken>` on Verify, when set. */
  verifierToken?: string;
  /** Deadline of each call, retries included, in milliseconds; default 2000. */
  deadlineMs?: number;
  /** Retries of Verify, GetKey, ListKeys and ListKeyEvents after UNAVAILABLE or DEADLINE_EXCEEDED; default 2. Changes are never retried. */
  retries?: number;
}

/** Per-call options. */
export interface KeywardCallOptions {
  /** Deadline of this call, retries included, in milliseconds, instead of the client's. */
  deadlineMs?: number;
}

type UnaryMethod = (
  request: unknown,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: unknown) => void,
) => unknown;

/**
 * A promise-based client of keyward's two services over one channel. Every
 * call has a deadline, which its retries share: a call settles by then.
 * Verify, GetKey, ListKeys and ListKeyEvents (which change nothing) are retried with a
 * short jittered backoff after UNAVAILABLE or DEADLINE_EXCEEDED while the
 * deadline leaves room; changes never are, since one whose answer was lost
 * may have been applied. A failed call rejects with grpc-js's `ServiceError`
 * (`code`, `details`); a refused key is an answer of Verify, not an error.
 */
export class KeywardClient {
  private readonly admin: KeyAdminServiceClient;
  private readonly verifier: KeyVerifierServiceClient;
  private readonly deadlineMs: number;
  private readonly retries: number;
  private readonly adminToken: string | undefined;
  private readonly verifierToken: string | undefined;

  constructor(options: KeywardClientOptions) {
    this.deadlineMs = checkDeadline(options.deadlineMs ?? DEFAULT_DEADLINE_MS, 'deadlineMs');
    const retries = options.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(retries) || retries < 0) throw new RangeError(`KeywardClient: retries must be a whole number ≥ 0, not ${retries}`);
    this.retries = retries;
    this.adminToken = options.adminToken;
    this.verifierToken = options.verifierToken;
    this.admin = new KeyAdminServiceClient(options.address, createChannelCredentials(options.tls));
    // One channel (one HTTP/2 connection) for both services.
    this.verifier = new KeyVerifierServiceClient(options.address, createChannelCredentials(options.tls), {
      channelOverride: this.admin.getChannel(),
    });
  }

  /** Whether a key may proceed; retried (safe). Needs `verifierToken` when the server has one. */
  verify(request: Partial<VerifyRequest>, options?: KeywardCallOptions): Promise<VerifyResponse> {
    return this.safeCall(this.verifier, 'verify', VerifyRequest.fromPartial(request), this.verifierToken, options);
  }

  /**
   * A session that sends Verify calls over one VerifyStream (see
   * VerifyStreamSession): the same answers as `verify`, at less cost per call
   * for a busy caller. Close it (or the client) when done.
   */
  openVerifyStream(): VerifyStreamSession {
    return new VerifyStreamSession(this.verifier, this.verifierToken, this.deadlineMs, this.retries);
  }

  /** Creates a key; the response holds its secret, the only time it is sent. Never retried. */
  createKey(request: Partial<CreateKeyRequest>, options?: KeywardCallOptions): Promise<CreateKeyResponse> {
    return this.call(this.admin, 'createKey', CreateKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** One key of an account; retried (safe). */
  getKey(request: Partial<GetKeyRequest>, options?: KeywardCallOptions): Promise<GetKeyResponse> {
    return this.safeCall(this.admin, 'getKey', GetKeyRequest.fromPartial(request), this.adminToken, options);
  }

  /** One page of an account's keys, newest first; retried (safe). */
  listKeys(request: Partial<ListKeysRequest>, options?: KeywardCallOptions): Promise<ListKeysResponse> {
    return this.safeCall(this.admin, 'listKeys', ListKeysRequest.fromPartial(request), this.adminToken, options);
  }

  /**
   * One page of an account's audit trail (of one key with `keyId`), newest
   * first: who changed what, when and from where; retried (safe).
   */
  listKeyEvents(request: Partial<ListKeyEventsRequest>, options?: KeywardCallOptions): Promise<ListKeyEventsResponse> {
    return this.safeCall(this.admin, 'listKeyEvents', ListKeyEventsRequest.fromPartial(request), this.adminToken, options);
  }

  /**
   * Changes the fields `updateMask` names (`name`, `expires_at`, `metadata`);
   * `expires_at` in the mask with no `expiresAt` clears the expiry. Never retried.
   */
  updateKey(request: Partial<UpdateKeyRequest>, options?: KeywardCallOptions): Promise<UpdateKeyResponse> {
    return this.call(this.admin, 'updateKey', UpdateKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Replaces a key's scopes. Never retried. */
  updateScopes(request: Partial<UpdateScopesRequest>, options?: KeywardCallOptions): Promise<UpdateScopesResponse> {
    return this.call(this.admin, 'updateScopes', UpdateScopesRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Replaces a key's IP whitelist (empty: every address). Never retried. */
  updateIpWhitelist(request: Partial<UpdateIpWhitelistRequest>, options?: KeywardCallOptions): Promise<UpdateIpWhitelistResponse> {
    return this.call(this.admin, 'updateIpWhitelist', UpdateIpWhitelistRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Revokes a key for good. Never retried (though revoking twice is harmless, the caller decides). */
  revokeKey(request: Partial<RevokeKeyRequest>, options?: KeywardCallOptions): Promise<RevokeKeyResponse> {
    return this.call(this.admin, 'revokeKey', RevokeKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /**
   * Replaces a key by a new one with the same name, environment, scopes,
   * whitelist and metadata; the response holds the new secret, the only time
   * it is sent. The old key keeps working for `gracePeriod` (unset or 0:
   * revoked at once). Never retried: a retry of a rotation that committed
   * would fail (already replaced) and the first secret would be lost.
   */
  rotateKey(request: Partial<RotateKeyRequest>, options?: KeywardCallOptions): Promise<RotateKeyResponse> {
    return this.call(this.admin, 'rotateKey', RotateKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Disables a key until enableKey (Verify answers VERIFY_CODE_DISABLED). Never retried. */
  disableKey(request: Partial<DisableKeyRequest>, options?: KeywardCallOptions): Promise<DisableKeyResponse> {
    return this.call(this.admin, 'disableKey', DisableKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Enables a disabled key again. Never retried. */
  enableKey(request: Partial<EnableKeyRequest>, options?: KeywardCallOptions): Promise<EnableKeyResponse> {
    return this.call(this.admin, 'enableKey', EnableKeyRequest.fromPartial(request), this.adminToken, this.deadline(options));
  }

  /** Closes the channel; calls in flight fail with CANCELLED. */
  close(): void {
    this.admin.close();
  }

  /** The deadline (epoch ms) of a call starting now. */
  private deadline(options: KeywardCallOptions | undefined): number {
    return Date.now() + (options?.deadlineMs === undefined ? this.deadlineMs : checkDeadline(options.deadlineMs, 'options.deadlineMs'));
  }

  /** A call that changes nothing: retried within its deadline. */
  private safeCall<Res>(client: Client, method: string, request: unknown, token: string | undefined, options: KeywardCallOptions | undefined): Promise<Res> {
    const deadline = this.deadline(options);
    return withRetries(this.retries, deadline, () => this.call<Res>(client, method, request, token, deadline));
  }

  /** One attempt of a unary call, with the bearer token, ending at `deadline` (epoch ms). */
  private call<Res>(client: Client, method: string, request: unknown, token: string | undefined, deadline: number): Promise<Res> {
    const unary = (client as unknown as Record<string, UnaryMethod>)[method] as UnaryMethod;
    return new Promise<Res>((resolve, reject) => {
      const metadata = new Metadata();
      if (token !== undefined) {
        try {
          metadata.set('authorization', `Bearer ${token}`);
        } catch {
          // grpc-js's message would echo the token.
          reject(new TypeError('KeywardClient: the token holds characters a gRPC header cannot carry (a line break?)'));
          return;
        }
      }
      unary.call(client, request, metadata, { deadline }, (error, response) => {
        if (error) reject(error);
        else resolve(response as Res);
      });
    });
  }
}

function checkDeadline(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`KeywardClient: ${name} must be a positive number of milliseconds, not ${value}`);
  return value;
}
