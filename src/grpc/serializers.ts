import { CreateKeyRequest, KeyAdminServiceService, KeyVerifierServiceService, VerifyStreamResponse } from '../gen/keyward/v1/keyward';
import { exactTimestampField } from './exactTimestamp';
import { encodeVerifyResponse } from '../verify/preEncoded';
import { withTolerantDecoding } from './malformedRequest';

/** Field tags of VerifyStreamResponse: request_id (1, bytes) and result (2, bytes). */
const REQUEST_ID_TAG = (1 << 3) | 2;
const RESULT_TAG = (2 << 3) | 2;

/** Bytes of `value` as a protobuf varint. */
function varintLength(value: number): number {
  let length = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    length++;
  }
  return length;
}

function writeVarint(out: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

/**
 * A VerifyStreamResponse carrying a result is written with the result's
 * kept bytes (an embedded message and a bytes field share one wire format),
 * straight into one buffer of the right size (a BinaryWriter and its copy
 * cost more than the rest of a stream message's own work:
 * bench/results/shapes.md); an error goes through the generated encoder.
 * The bytes are those of the generated encoder: fields in order, an empty
 * request_id left out.
 */
export function serializeVerifyStreamResponse(value: VerifyStreamResponse): Buffer {
  if (value.outcome?.$case !== 'result') return Buffer.from(VerifyStreamResponse.encode(value).finish());
  const result = encodeVerifyResponse(value.outcome.value);
  const id = value.requestId;
  const idLength = id === '' ? 0 : Buffer.byteLength(id);
  const size = (id === '' ? 0 : 1 + varintLength(idLength) + idLength) + 1 + varintLength(result.length) + result.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (id !== '') {
    out[at++] = REQUEST_ID_TAG;
    at = writeVarint(out, at, idLength);
    at += out.write(id, at, 'utf8');
  }
  out[at++] = RESULT_TAG;
  at = writeVarint(out, at, result.length);
  result.copy(out, at);
  return out;
}

/**
 * The generated KeyVerifierService definition, with the response serializers
 * taught to use pre-encoded Verify answers (grpc-js copies the bytes into its
 * frame; it never writes to them), and requests that do not decode handed to
 * the handlers as MalformedRequest.
 */
export const VerifierServiceDefinition = withTolerantDecoding({
  ...KeyVerifierServiceService,
  verify: { ...KeyVerifierServiceService.verify, responseSerialize: encodeVerifyResponse },
  verifyStream: { ...KeyVerifierServiceService.verifyStream, responseSerialize: serializeVerifyStreamResponse },
} as const satisfies typeof KeyVerifierServiceService);

/** CreateKeyRequest.expires_at (field 6): read exactly, and invalid when out of Timestamp's range. */
const EXPIRES_AT_FIELD = 6;

function decodeCreateKeyRequest(bytes: Buffer): CreateKeyRequest {
  const request = CreateKeyRequest.decode(bytes);
  if (request.expiresAt !== undefined) request.expiresAt = exactTimestampField(bytes, EXPIRES_AT_FIELD);
  return request;
}

/**
 * The generated KeyAdminService definition, with CreateKey's expires_at read
 * exactly, and requests that do not decode handed to the handlers as
 * MalformedRequest.
 */
export const AdminServiceDefinition = withTolerantDecoding({
  ...KeyAdminServiceService,
  createKey: { ...KeyAdminServiceService.createKey, requestDeserialize: decodeCreateKeyRequest },
} as const satisfies typeof KeyAdminServiceService);
