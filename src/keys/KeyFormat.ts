import { hash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

/** A key's environment, which its prefix shows. */
export type Environment = 'live' | 'test';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** Base62 digit value by character code (undefined: not a base62 character). */
const DIGIT_VALUE: ReadonlyArray<number | undefined> = Array.from({ length: 128 }, (_, code) => {
  const index = ALPHABET.indexOf(String.fromCharCode(code));
  return index === -1 ? undefined : index;
});
/** Bytes from the CSPRNG in every key: 256 bits. */
const RANDOM_BYTES = 32;
/** 62^43 > 2^256, so 43 base62 characters hold the 32 bytes at fixed width. */
const RANDOM_CHARS = 43;
/** 62^6 > 2^32, so 6 base62 characters hold a CRC32 at fixed width. */
const CHECKSUM_CHARS = 6;
const BODY_CHARS = RANDOM_CHARS + CHECKSUM_CHARS;
/** Characters shown at each end of the body in a key's display form. */
const DISPLAY_CHARS = 4;

/**
 * The shape of a secret: `<prefix><43 random base62><6 base62 CRC32>`, e.g.
 * `fsm_live_` + 49 characters. The checksum (CRC32 of everything before it)
 * lets Verify refuse typos and garbage without any I/O, and lets secret
 * scanners match `fsm_(live|test)_[0-9A-Za-z]{49}` with few false positives.
 */
export class KeyFormat {
  constructor(
    readonly livePrefix: string,
    readonly testPrefix: string,
  ) {}

  prefixOf(environment: Environment): string {
    return environment === 'live' ? this.livePrefix : this.testPrefix;
  }

  /** A new secret for the environment. Shown once, then only its hash is kept. */
  generate(environment: Environment): string {
    const head = this.prefixOf(environment) + encodeBase62(BigInt(`0x${randomBytes(RANDOM_BYTES).toString('hex')}`), RANDOM_CHARS);
    return head + encodeBase62(BigInt(crc32(head)), CHECKSUM_CHARS);
  }

  /**
   * The environment of a well-formed secret whose checksum holds; undefined
   * for anything else. Pure and cheap: this is the first gate of Verify.
   */
  check(raw: string): Environment | undefined {
    let environment: Environment;
    if (raw.startsWith(this.livePrefix)) environment = 'live';
    else if (raw.startsWith(this.testPrefix)) environment = 'test';
    else return undefined;
    const prefixLength = (environment === 'live' ? this.livePrefix : this.testPrefix).length;
    if (raw.length !== prefixLength + BODY_CHARS) return undefined;
    for (let i = prefixLength; i < raw.length; i++) {
      if (DIGIT_VALUE[raw.charCodeAt(i)] === undefined) return undefined;
    }
    const split = raw.length - CHECKSUM_CHARS;
    return crc32(raw.slice(0, split)) === decodeBase62(raw, split) ? environment : undefined;
  }

  /** The masked form safe to store and show: `fsm_live_AbCd…WxYz`. */
  display(secret: string, environment: Environment): string {
    const prefix = this.prefixOf(environment);
    return `${prefix}${secret.slice(prefix.length, prefix.length + DISPLAY_CHARS)}…${secret.slice(-DISPLAY_CHARS)}`;
  }
}

/** SHA-256 of a secret, hex: the only form in which keyward stores or caches a key. */
export function hashSecret(secret: string): string {
  return hash('sha256', secret, 'hex');
}

function encodeBase62(value: bigint, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = ALPHABET[Number(value % 62n)] + out;
    value /= 62n;
  }
  return out;
}

/** Decodes the base62 characters of `text` from `start` to the end (at most 8, so the result is exact). */
function decodeBase62(text: string, start: number): number {
  let value = 0;
  for (let i = start; i < text.length; i++) value = value * 62 + (DIGIT_VALUE[text.charCodeAt(i)] as number);
  return value;
}
