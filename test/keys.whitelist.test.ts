import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeywardError } from '../src/errors';
import { compileWhitelist, MAX_WHITELIST_ENTRIES, normaliseWhitelist } from '../src/keys/ipWhitelist';

function refused(entries: string[], field: RegExp): void {
  assert.throws(
    () => normaliseWhitelist('ip_whitelist', entries),
    (error: unknown) => error instanceof KeywardError && error.code === 'INVALID_ARGUMENT' && field.test(error.message),
  );
}

describe('normaliseWhitelist', () => {
  it('normalises addresses and ranges, clearing host bits and dropping duplicates', () => {
    assert.deepEqual(
      normaliseWhitelist('ip_whitelist', [
        '203.0.113.7',
        ' 203.0.113.7/24 ',
        '203.0.113.0/24',
        '2001:DB8:0:0:0:0:0:1',
        '2001:db8::1/128',
        '2001:db8:abcd::/32',
        '10.1.2.3/32',
        '0.0.0.0/0',
      ]),
      ['203.0.113.7', '203.0.113.0/24', '2001:db8::1', '2001:db8::/32', '10.1.2.3', '0.0.0.0/0'],
    );
  });

  it('turns IPv4-mapped IPv6 entries into IPv4', () => {
    assert.deepEqual(normaliseWhitelist('ip_whitelist', ['::ffff:203.0.113.7', '::ffff:198.51.100.0/120']), [
      '203.0.113.7',
      '198.51.100.0/24',
    ]);
  });

  it('refuses what is not an address or range, naming the entry and the value', () => {
    refused(['203.0.113.0/33'], /^ip_whitelist\[0\] "203\.0\.113\.0\/33"/);
    refused(['10.0.0.1', '300.1.2.3'], /^ip_whitelist\[1\] "300\.1\.2\.3"/);
    refused(['example.com'], /ip_whitelist\[0\] "example\.com"/);
    refused([''], /ip_whitelist\[0\] ""/);
    refused(['10.1'], /four decimal parts/);
    refused(['0x7f.0.0.1'], /ip_whitelist\[0\]/);
    refused(['fe80::1%eth0'], /ip_whitelist\[0\]/);
    refused(['2001:db8::/129'], /ip_whitelist\[0\]/);
    refused(Array.from({ length: MAX_WHITELIST_ENTRIES + 1 }, (_, i) => `10.0.${i >> 8}.${i & 255}`), /^ip_whitelist "1001 entries"/);
  });
});

describe('compileWhitelist', () => {
  it('allows every address, even none, when empty', () => {
    const allows = compileWhitelist([]);
    assert.equal(allows('203.0.113.7'), true);
    assert.equal(allows(''), true);
    assert.equal(allows('garbage'), true);
  });

  it('matches IPv4 addresses and ranges', () => {
    const allows = compileWhitelist(['203.0.113.0/24', '198.51.100.7', '10.0.0.0/8']);
    assert.equal(allows('203.0.113.255'), true);
    assert.equal(allows('203.0.114.0'), false);
    assert.equal(allows('198.51.100.7'), true);
    assert.equal(allows('198.51.100.8'), false);
    assert.equal(allows('10.255.255.255'), true);
    assert.equal(allows('11.0.0.0'), false);
  });

  it('matches IPv4-mapped IPv6 client addresses against IPv4 entries', () => {
    const allows = compileWhitelist(['203.0.113.0/24']);
    assert.equal(allows('::ffff:203.0.113.7'), true);
    assert.equal(allows('::ffff:cb00:7107'), true);
    assert.equal(allows('::ffff:203.0.114.7'), false);
  });

  it('matches IPv6 addresses and ranges, in any spelling', () => {
    const allows = compileWhitelist(['2001:db8::/32', '2001:db9::1']);
    assert.equal(allows('2001:db8:1234::5'), true);
    assert.equal(allows('2001:0DB8:0000::0001'), true);
    assert.equal(allows('2001:db9::1'), true);
    assert.equal(allows('2001:db9::2'), false);
    assert.equal(allows('203.0.113.7'), false);
  });

  it('refuses a missing or unparseable client address when not empty', () => {
    const allows = compileWhitelist(['0.0.0.0/0', '::/0']);
    assert.equal(allows('203.0.113.7'), true);
    assert.equal(allows('::1'), true);
    assert.equal(allows(''), false);
    assert.equal(allows('not-an-ip'), false);
    assert.equal(allows('203.0.113.7:443'), false);
    assert.equal(allows('127.1'), false);
  });

  it('matches the whole range of a /0 and a /1', () => {
    const allows = compileWhitelist(['128.0.0.0/1']);
    assert.equal(allows('128.0.0.0'), true);
    assert.equal(allows('255.255.255.255'), true);
    assert.equal(allows('127.255.255.255'), false);
  });
});
