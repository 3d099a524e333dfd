import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Environment, VerifyCode, type VerifyResponse, VerifyStreamResponse } from '../src/gen/keyward/v1/keyward';
import { serializeVerifyStreamResponse } from '../src/grpc/serializers';
import { preEncoded } from '../src/verify/preEncoded';

const answer = (metadataValue: string): VerifyResponse => ({
  valid: true,
  code: VerifyCode.VERIFY_CODE_OK,
  httpStatus: 200,
  keyId: 'key_01',
  accountId: 'acct_01',
  environment: Environment.ENVIRONMENT_LIVE,
  scopes: ['jobs:read', 'technicians:read'],
  missingScopes: [],
  keyName: 'ci',
  metadata: { note: metadataValue },
});

describe('VerifyStreamResponse serializer', () => {
  const ids = ['', '0', '99', 'req-ü-🔑', 'x'.repeat(127), 'y'.repeat(128), 'z'.repeat(300)];
  // Results of every size class: a length varint of one byte and of two.
  const results = [answer(''), answer('m'.repeat(60)), answer('n'.repeat(200)), preEncoded(answer('kept')), preEncoded(answer('k'.repeat(500)))];

  it('writes a result with exactly the bytes of the generated encoder', () => {
    for (const requestId of ids) {
      for (const value of results) {
        const message: VerifyStreamResponse = { requestId, outcome: { $case: 'result', value } };
        const expected = Buffer.from(VerifyStreamResponse.encode(message).finish());
        assert.deepEqual(serializeVerifyStreamResponse(message), expected, `request_id of ${requestId.length} characters`);
        assert.deepEqual(VerifyStreamResponse.decode(serializeVerifyStreamResponse(message)), VerifyStreamResponse.decode(expected));
      }
    }
  });

  it('writes an error through the generated encoder', () => {
    const message: VerifyStreamResponse = { requestId: 'r1', outcome: { $case: 'error', value: { code: 3, message: 'required_scopes: unknown scope' } } };
    assert.deepEqual(serializeVerifyStreamResponse(message), Buffer.from(VerifyStreamResponse.encode(message).finish()));
  });
});
