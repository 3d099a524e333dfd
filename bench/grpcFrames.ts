import { VerifyRequest, VerifyStreamRequest } from '../src/gen/keyward/v1/keyward';

/** A gRPC length-prefixed message: flag byte 0 (uncompressed), 4-byte big-endian length, bytes. */
export function frame(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  Buffer.from(message).copy(framed, 5);
  return framed;
}

export interface VerifyFields {
  readonly key: string;
  readonly clientIp: string;
  readonly requiredScopes: string[];
}

/** The body of a unary Verify call, as h2load posts it. */
export function verifyBody(fields: VerifyFields): Buffer {
  return frame(VerifyRequest.encode(fields).finish());
}

/** The body of one VerifyStream call: `count` requests, ids 0…count-1. */
export function verifyStreamBody(fields: VerifyFields, count: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, i) => frame(VerifyStreamRequest.encode({ requestId: String(i), ...fields }).finish())));
}
