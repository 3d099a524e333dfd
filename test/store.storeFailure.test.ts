import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeywardError } from '../src/errors';
import { StoreUnavailable, classifyStoreFailure, failureOf, storeError } from '../src/store/storeFailure';

const coded = (code: string, message = 'any text at all'): Error => Object.assign(new Error(message), { code });
const calm = { timedOut: false, connectionLost: false };

describe('classifyStoreFailure: from codes, the phase and what keyward observed, never from message text', () => {
  it('calls a refused, reset or unresolvable connection unreachable, in either phase', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ETIMEDOUT']) {
      assert.equal(classifyStoreFailure(coded(code), 'connect', calm), 'unreachable', code);
      assert.equal(classifyStoreFailure(coded(code), 'query', calm), 'unreachable', code);
    }
    assert.equal(classifyStoreFailure(new AggregateError([coded('ECONNREFUSED')]), 'connect', calm), 'unreachable', 'every address refused');
  });

  it('calls a server shutting down, crashed, starting, or a class 08 SQLSTATE unreachable', () => {
    for (const code of ['57P01', '57P02', '57P03', '08006', '08001']) assert.equal(classifyStoreFailure(coded(code), 'query', calm), 'unreachable', code);
  });

  it("calls keyward's own timeout, a statement_timeout cancel and too many connections slow", () => {
    assert.equal(classifyStoreFailure(new Error('x'), 'query', { timedOut: true, connectionLost: true }), 'slow', 'keyward ended the connection at its limit');
    assert.equal(classifyStoreFailure(coded('ECONNRESET'), 'connect', { timedOut: true, connectionLost: false }), 'slow', 'the timer decides first');
    assert.equal(classifyStoreFailure(coded('57014'), 'query', calm), 'slow');
    assert.equal(classifyStoreFailure(coded('53300'), 'connect', calm), 'slow');
  });

  it('calls an uncoded error unreachable only when the connection could not be made or ended under the statement', () => {
    assert.equal(classifyStoreFailure(new Error('Connection terminated unexpectedly'), 'connect', calm), 'unreachable');
    assert.equal(classifyStoreFailure(new Error('whatever'), 'query', { timedOut: false, connectionLost: true }), 'unreachable');
    assert.equal(classifyStoreFailure(new Error('Connection terminated unexpectedly'), 'query', calm), 'failed', 'the text alone proves nothing');
  });

  it('calls a statement PostgreSQL refused failed', () => {
    for (const code of ['42601', '23505', '22P02', '40001']) assert.equal(classifyStoreFailure(coded(code), 'query', calm), 'failed', code);
  });
});

describe('storeError and failureOf', () => {
  it('wraps unreachable and slow failures as UNAVAILABLE carrying the classification, and passes the rest on', () => {
    const driver = coded('ECONNREFUSED');
    const wrapped = storeError(driver, 'connect', calm);
    assert.ok(wrapped instanceof StoreUnavailable && wrapped instanceof KeywardError);
    assert.equal(wrapped.code, 'UNAVAILABLE');
    assert.equal(wrapped.cause, driver);
    assert.deepEqual(failureOf(wrapped), { kind: 'unreachable', phase: 'connect' });
    const refused = coded('42601');
    assert.equal(storeError(refused, 'query', calm), refused);
    assert.deepEqual(failureOf(refused), { kind: 'failed', phase: 'query' });
    assert.deepEqual(failureOf(new Error('a Redis timeout')), { kind: 'failed', phase: 'query' });
  });
});
