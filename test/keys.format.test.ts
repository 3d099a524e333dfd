import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';

const format = new KeyFormat('fsm_live_', 'fsm_test_');

describe('KeyFormat', () => {
  it('generates fsm_live_/fsm_test_ keys of 49 base62 characters after the prefix', () => {
    const live = format.generate('live');
    const test = format.generate('test');
    assert.match(live, /^fsm_live_[0-9A-Za-z]{49}$/);
    assert.match(test, /^fsm_test_[0-9A-Za-z]{49}$/);
    assert.equal(format.check(live), 'live');
    assert.equal(format.check(test), 'test');
  });

  it('never repeats itself and spreads over the whole alphabet', () => {
    const secrets = Array.from({ length: 2_000 }, () => format.generate('live'));
    assert.equal(new Set(secrets).size, secrets.length);
    const characters = new Set(secrets.flatMap((s) => [...s.slice('fsm_live_'.length, -6)]));
    assert.equal(characters.size, 62);
  });

  it('refuses every single-character typo through the checksum', () => {
    const secret = format.generate('live');
    const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    let tried = 0;
    for (let i = 'fsm_live_'.length; i < secret.length; i++) {
      for (const c of ['0', 'Z', 'z', alphabet[(alphabet.indexOf(secret[i] as string) + 1) % 62] as string]) {
        if (c === secret[i]) continue;
        const typo = secret.slice(0, i) + c + secret.slice(i + 1);
        assert.equal(format.check(typo), undefined, `typo at ${i} accepted`);
        tried++;
      }
    }
    assert.ok(tried > 100);
  });

  it('refuses swapped neighbours, wrong lengths, wrong prefixes and garbage', () => {
    const secret = format.generate('test');
    const swapped = secret.slice(0, 20) + secret[21] + secret[20] + secret.slice(22);
    if (secret[20] !== secret[21]) assert.equal(format.check(swapped), undefined);
    for (const bad of [
      '',
      'fsm_test_',
      secret.slice(0, -1),
      `${secret}A`,
      secret.replace('fsm_test_', 'fsm_live_'),
      secret.replace('fsm_test_', 'FSM_TEST_'),
      `${secret.slice(0, -2)}!!`,
      'Bearer abc',
      'x'.repeat(10_000),
    ]) {
      assert.equal(format.check(bad), undefined, `accepted ${bad.slice(0, 30)}`);
    }
  });

  it('honours configured prefixes', () => {
    const custom = new KeyFormat('acme_prod_', 'acme_dev_');
    const secret = custom.generate('test');
    assert.match(secret, /^acme_dev_[0-9A-Za-z]{49}$/);
    assert.equal(custom.check(secret), 'test');
    assert.equal(format.check(secret), undefined);
  });

  it('displays the prefix and four characters from each end only', () => {
    const secret = format.generate('live');
    const display = format.display(secret, 'live');
    assert.equal(display, `fsm_live_${secret.slice(9, 13)}…${secret.slice(-4)}`);
    assert.ok(!display.includes(secret.slice(13, -4)));
  });

  it('hashes with SHA-256 to 64 hex characters', () => {
    assert.equal(hashSecret('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
