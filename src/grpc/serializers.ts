import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { CreateKeyRequest, KeyAdminServiceService, KeyVerifierServiceService, VerifyStreamResponse } from '../gen/keyward/v1/keyward';
import { exactTimestampField } from './exactTimestamp';
import { encodeVerifyResponse } from '../verify/preEncoded';
import { withTolerantDecoding } from './malformedRequest';

/** Field tags of VerifyStreamResponse: request_id (1, bytes) and result (2, bytes). */
const REQUEST_ID_TAG = (1 << 3) | 2;
const RESULT_TAG = (2 << 3) | 2;

/**
 * A VerifyStreamResponse carrying a result is written with the result's
 * kept bytes (an embedded message and a bytes field share one wire format);
 * an error goes through the generated encoder.
 */
function serializeVerifyStreamResponse(value: VerifyStreamResponse): Buffer {
  if (value.outcome?.$case !== 'result') return Buffer.from(VerifyStreamResponse.encode(value).finish());
  const writer = new BinaryWriter();
  if (value.requestId !== '') writer.uint32(REQUEST_ID_TAG).string(value.requestId);
  writer.uint32(RESULT_TAG).bytes(encodeVerifyResponse(value.outcome.value));
  return Buffer.from(writer.finish());
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
