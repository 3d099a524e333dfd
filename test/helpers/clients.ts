import assert from 'node:assert/strict';
import { type ChannelCredentials, type Client, Metadata, type ServiceError, credentials, type status } from '@grpc/grpc-js';
import {
  CreateKeyRequest,
  type CreateKeyResponse,
  DisableKeyRequest,
  type DisableKeyResponse,
  EnableKeyRequest,
  type EnableKeyResponse,
  Environment,
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
  VerifyStreamRequest,
  type VerifyStreamResponse,
} from '../../src/gen/keyward/v1/keyward';
import { ADMIN_TOKEN } from './env';

type Partial<T> = { [K in keyof T]?: T[K] };
type Callback = (error: ServiceError | null, response: unknown) => void;
type UnaryMethod = (request: unknown, metadata: Metadata, callback: Callback) => unknown;

/** Calls a generated client's unary method by name; the caller names the response type. */
function unary<Res>(client: Client, method: string, request: unknown, metadata: Metadata): Promise<Res> {
  return new Promise((resolve, reject) => {
    const call = (client as unknown as Record<string, UnaryMethod>)[method] as UnaryMethod;
    call.call(client, request, metadata, (error, response) => (error ? reject(error) : resolve(response as Res)));
  });
}

function bearer(token: string | null | undefined): Metadata {
  const metadata = new Metadata();
  if (token !== undefined && token !== null) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/** Every secret any test client has received, to check that none reaches a log. */
export const secretsSeen = new Set<string>();

/** The generated admin client, promisified, with the admin token by default. */
export class AdminClient {
  readonly raw: KeyAdminServiceClient;

  constructor(
    address: string,
    /** null sends no authorization metadata. */
    private readonly token: string | null = ADMIN_TOKEN,
    /** Plaintext unless a test of TLS says otherwise. */
    channelCredentials: ChannelCredentials = credentials.createInsecure(),
  ) {
    this.raw = new KeyAdminServiceClient(address, channelCredentials);
  }

  async createKey(request: Partial<CreateKeyRequest>): Promise<CreateKeyResponse> {
    const response = await unary<CreateKeyResponse>(this.raw, 'createKey', CreateKeyRequest.fromPartial(request), bearer(this.token));
    secretsSeen.add(response.secret);
    return response;
  }

  /** Creates a live key with the given scopes (default jobs:read) for `accountId`. */
  async newKey(accountId: string, request: Partial<CreateKeyRequest> = {}): Promise<CreateKeyResponse> {
    return this.createKey({ accountId, name: 'test key', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'], ...request });
  }

  updateKey(request: Partial<UpdateKeyRequest>): Promise<UpdateKeyResponse> {
    return unary(this.raw, 'updateKey', UpdateKeyRequest.fromPartial(request), bearer(this.token));
  }

  getKey(request: Partial<GetKeyRequest>): Promise<GetKeyResponse> {
    return unary(this.raw, 'getKey', GetKeyRequest.fromPartial(request), bearer(this.token));
  }

  listKeys(request: Partial<ListKeysRequest>): Promise<ListKeysResponse> {
    return unary(this.raw, 'listKeys', ListKeysRequest.fromPartial(request), bearer(this.token));
  }

  listKeyEvents(request: Partial<ListKeyEventsRequest>): Promise<ListKeyEventsResponse> {
    return unary(this.raw, 'listKeyEvents', ListKeyEventsRequest.fromPartial(request), bearer(this.token));
  }

  updateScopes(request: Partial<UpdateScopesRequest>): Promise<UpdateScopesResponse> {
    return unary(this.raw, 'updateScopes', UpdateScopesRequest.fromPartial(request), bearer(this.token));
  }

  updateIpWhitelist(request: Partial<UpdateIpWhitelistRequest>): Promise<UpdateIpWhitelistResponse> {
    return unary(this.raw, 'updateIpWhitelist', UpdateIpWhitelistRequest.fromPartial(request), bearer(this.token));
  }

  revokeKey(request: Partial<RevokeKeyRequest>): Promise<RevokeKeyResponse> {
    return unary(this.raw, 'revokeKey', RevokeKeyRequest.fromPartial(request), bearer(this.token));
  }

  async rotateKey(request: Partial<RotateKeyRequest>): Promise<RotateKeyResponse> {
    const response = await unary<RotateKeyResponse>(this.raw, 'rotateKey', RotateKeyRequest.fromPartial(request), bearer(this.token));
    secretsSeen.add(response.secret);
    return response;
  }

  disableKey(request: Partial<DisableKeyRequest>): Promise<DisableKeyResponse> {
    return unary(this.raw, 'disableKey', DisableKeyRequest.fromPartial(request), bearer(this.token));
  }

  enableKey(request: Partial<EnableKeyRequest>): Promise<EnableKeyResponse> {
    return unary(this.raw, 'enableKey', EnableKeyRequest.fromPartial(request), bearer(this.token));
  }

  close(): void {
    this.raw.close();
  }
}

/** The generated verifier client, promisified. */
export class VerifierClient {
  readonly raw: KeyVerifierServiceClient;

  constructor(
    address: string,
    private readonly token?: string,
    /** Plaintext unless a test of TLS says otherwise. */
    channelCredentials: ChannelCredentials = credentials.createInsecure(),
  ) {
    this.raw = new KeyVerifierServiceClient(address, channelCredentials);
  }

  verify(request: Partial<VerifyRequest>): Promise<VerifyResponse> {
    return unary(this.raw, 'verify', VerifyRequest.fromPartial(request), bearer(this.token));
  }

  /** Sends every request on one VerifyStream, ends it, and resolves with the responses in arrival order. */
  verifyStream(requests: ReadonlyArray<Partial<VerifyStreamRequest>>): Promise<VerifyStreamResponse[]> {
    return new Promise((resolve, reject) => {
      const responses: VerifyStreamResponse[] = [];
      const stream = this.raw.verifyStream(bearer(this.token));
      stream.on('data', (response: VerifyStreamResponse) => responses.push(response));
      stream.on('error', reject);
      stream.on('end', () => resolve(responses));
      for (const request of requests) stream.write(VerifyStreamRequest.fromPartial(request));
      stream.end();
    });
  }

  close(): void {
    this.raw.close();
  }
}

/** Asserts that `promise` fails with the gRPC `code` and details matching `details`. */
export async function assertGrpcError(promise: Promise<unknown>, code: status, details?: RegExp): Promise<ServiceError> {
  let error: unknown;
  try {
    await promise;
  } catch (caught) {
    error = caught;
  }
  assert.ok(error !== undefined, `expected gRPC status ${code}, but the call succeeded`);
  const serviceError = error as ServiceError;
  assert.equal(serviceError.code, code, `expected gRPC status ${code}, got ${serviceError.code}: ${serviceError.details}`);
  if (details !== undefined) assert.match(serviceError.details, details);
  return serviceError;
}

/** JSON text of a response (bigints as strings), for searching it for a secret. */
export function responseText(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
}
