/**
 * `keyward/client`: a promise-based client of keyward's gRPC services, the
 * message types it speaks, and the HTTP guard. Loads none of the server's
 * dependencies (no pg, ioredis, pino, prom-client): the generated code needs
 * only @grpc/grpc-js and @bufbuild/protobuf (test/client.library.test.ts).
 */
export { DEFAULT_DEADLINE_MS, DEFAULT_RETRIES, KeywardClient, type KeywardCallOptions, type KeywardClientOptions } from './KeywardClient';
export type { KeywardTlsOptions } from './channelCredentials';
export type { VerifyStreamSession } from './VerifyStreamSession';
export { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
export {
  ApiKey,
  CreateKeyRequest,
  CreateKeyResponse,
  DisableKeyRequest,
  DisableKeyResponse,
  EnableKeyRequest,
  EnableKeyResponse,
  Environment,
  environmentFromJSON,
  environmentToJSON,
  GetKeyRequest,
  GetKeyResponse,
  FieldChange,
  KeyAction,
  keyActionFromJSON,
  keyActionToJSON,
  KeyEvent,
  ListKeyEventsRequest,
  ListKeyEventsResponse,
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
  verifyCodeFromJSON,
  verifyCodeToJSON,
  VerifyRequest,
  VerifyResponse,
} from '../gen/keyward/v1/keyward';
export * from './guard';
