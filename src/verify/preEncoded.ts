import { VerifyResponse } from '../gen/keyward/v1/keyward';

const ENCODED = Symbol('keyward.encodedVerifyResponse');

type Encoded = VerifyResponse & { readonly [ENCODED]?: Buffer };

/**
 * Freezes a response that will be answered many times (a refusal without a
 * key, a key's OK) and keeps its protobuf bytes with it, so that answering
 * it again costs no encoding (see src/grpc/serializers.ts).
 */
export function preEncoded(response: VerifyResponse): VerifyResponse {
  Object.defineProperty(response, ENCODED, { value: Buffer.from(VerifyResponse.encode(response).finish()) });
  return Object.freeze(response);
}

/** The protobuf bytes of a response: kept ones when it has them. */
export function encodeVerifyResponse(value: VerifyResponse): Buffer {
  return (value as Encoded)[ENCODED] ?? Buffer.from(VerifyResponse.encode(value).finish());
}
