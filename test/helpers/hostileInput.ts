/**
 * Hostile input for the property tests of every RPC (test/rpc.hostile.property.test.ts):
 * fast-check arbitraries for strings, addresses, scopes, page tokens and
 * timestamps; a grpc-js client that sends raw bytes (invalid UTF-8, malformed
 * protobuf); independent oracles for what the contract allows; and the runner
 * that prints fast-check's seed and path on failure.
 */
import { crc32 } from 'node:zlib';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Client, Metadata, credentials, status } from '@grpc/grpc-js';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { DEFAULT_SCOPES } from '../../src/keys/scopes';

// ---------------------------------------------------------------------------
// Raw-bytes client
// ---------------------------------------------------------------------------

/** What a call answered: a decoded response, or a gRPC status with its details. */
export interface Outcome<T> {
  readonly code: status;
  readonly details: string;
  readonly response?: T;
}

/** The bytes as a Buffer without copying (grpc-js wants Buffers). */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A grpc-js generic client whose request serializer is the identity: it puts
 * exactly the given bytes on the wire, whatever they encode (or fail to).
 */
export class RawClient {
  private readonly client: Client;

  constructor(
    address: string,
    private readonly token?: string,
  ) {
    this.client = new Client(address, credentials.createInsecure());
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) metadata.set('authorization', `Bearer ${this.token}`);
    return metadata;
  }

  unary<T>(path: string, request: Uint8Array, decode: (bytes: Uint8Array) => T, timeoutMs = 20_000): Promise<Outcome<T>> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest<Buffer, T>(
        path,
        (bytes) => bytes,
        (bytes) => decode(bytes),
        toBuffer(request),
        this.metadata(),
        { deadline: Date.now() + timeoutMs },
        (error, response) => {
          if (error) resolve({ code: error.code, details: error.details });
          else resolve({ code: status.OK, details: '', response: response as T });
        },
      );
    });
  }

  /** Writes every message on one bidirectional stream, ends it, and collects the answers and the final status. */
  bidi<T>(path: string, requests: readonly Uint8Array[], decode: (bytes: Uint8Array) => T, timeoutMs = 20_000): Promise<{ responses: T[]; code: status; details: string }> {
    return new Promise((resolve) => {
      const responses: T[] = [];
      const call = this.client.makeBidiStreamRequest<Buffer, T>(path, (bytes) => bytes, (bytes) => decode(bytes), this.metadata(), {
        deadline: Date.now() + timeoutMs,
      });
      call.on('data', (response: T) => responses.push(response));
      call.on('error', () => {
        // The final status (below) carries the error.
      });
      call.on('status', (final) => setImmediate(() => resolve({ responses, code: final.code, details: final.details })));
      for (const request of requests) call.write(toBuffer(request));
      call.end();
    });
  }

  close(): void {
    this.client.close();
  }
}

// ---------------------------------------------------------------------------
// Wire encoding by hand
// ---------------------------------------------------------------------------

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts.map(toBuffer));
}

/** A length-delimited field (string, bytes, embedded message) with exactly these bytes. */
export function bytesField(field: number, payload: Uint8Array): Uint8Array {
  return new BinaryWriter()
    .uint32((field << 3) | 2)
    .bytes(payload)
    .finish();
}

/** A varint field written as int64 (negative values take ten bytes, as protobuf writes a negative int32). */
export function varintField(field: number, value: bigint): Uint8Array {
  return new BinaryWriter()
    .uint32(field << 3)
    .int64(value)
    .finish();
}

/** A google.protobuf.Timestamp field with any seconds and nanos, both always written. */
export function timestampField(field: number, seconds: bigint, nanos: number): Uint8Array {
  const inner = new BinaryWriter().uint32(8).int64(seconds).uint32(16).int32(nanos).finish();
  return bytesField(field, inner);
}

// ---------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------

/** The product's scope catalog (README), which the test server runs with. */
export const SCOPES = DEFAULT_SCOPES;

const BASE62 = [...'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'];

export const MARKUP = '<img src=x onerror=alert(1)>';

/** Values that have broken services before: control and format characters, lone surrogates, injection attempts. */
export const SPECIAL_STRINGS: readonly string[] = [
  '',
  ' ',
  '   ',
  '\t',
  '\n',
  '\r\n',
  '\u0000',
  'a\u0000b',
  '\u0000abc',
  'abc\u0000',
  '\u0001',
  '\u001b[31mred',
  '\u007f',
  '\u0085',
  '\u009f',
  '\u00a0',
  '\u2028',
  '\u2029',
  '\u200b',
  '\u200e',
  '\u202e',
  '\ufeff',
  '\ufffd',
  '\uffff',
  '\ud800',
  '\udfff',
  'a\ud800b',
  '\udc00\ud800',
  '😀',
  'é',
  'e\u0301',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
  'İ',
  'ß',
  MARKUP,
  '<script>alert(1)</script>',
  "'; drop table keyward.api_keys; --",
  "' or '1'='1",
  '"',
  '\\',
  '\\"',
  '%s%s%n',
  '%00',
  '${jndi:ldap://x/a}',
  '{{7*7}}',
  '../../etc/passwd',
  'null',
  'undefined',
  'NaN',
  '0',
  '-1',
  'true',
  '[]',
  '{}',
  '{"__proto__":{"x":1}}',
  '__proto__',
  'constructor',
  'toString',
  ' acct',
  'acct ',
  'Bearer x',
];

/** Ways to get a secret almost right. */
const MUTATIONS = [
  'exact',
  'flip',
  'flip',
  'upperPrefix',
  'mixPrefix',
  'swapEnv',
  'dropLast',
  'dropFirst',
  'append',
  'prepend',
  'spaces',
  'newline',
  'nul',
  'nulInside',
  'double',
  'bearer',
  'lowerBody',
  'upperBody',
  'transpose',
  'bodyOnly',
] as const;

export function mutateSecret(secret: string, kind: (typeof MUTATIONS)[number], position: number, char: string): string {
  const prefixLength = secret.indexOf('_', 4) + 1;
  const prefix = secret.slice(0, prefixLength);
  const body = secret.slice(prefixLength);
  const at = prefixLength + (position % Math.max(1, body.length));
  switch (kind) {
    case 'exact':
      return secret;
    case 'flip': {
      const old = secret[at];
      const replacement = char === old ? (char === 'a' ? 'b' : 'a') : char;
      return secret.slice(0, at) + replacement + secret.slice(at + 1);
    }
    case 'upperPrefix':
      return prefix.toUpperCase() + body;
    case 'mixPrefix':
      return `F${secret.slice(1)}`;
    case 'swapEnv':
      return (prefix === 'fsm_live_' ? 'fsm_test_' : 'fsm_live_') + body;
    case 'dropLast':
      return secret.slice(0, -1);
    case 'dropFirst':
      return secret.slice(1);
    case 'append':
      return secret + char;
    case 'prepend':
      return char + secret;
    case 'spaces':
      return ` ${secret} `;
    case 'newline':
      return `${secret}\n`;
    case 'nul':
      return `${secret}\u0000`;
    case 'nulInside':
      return `${secret.slice(0, at)}\u0000${secret.slice(at)}`;
    case 'double':
      return secret + secret;
    case 'bearer':
      return `Bearer ${secret}`;
    case 'lowerBody':
      return prefix + body.toLowerCase();
    case 'upperBody':
      return prefix + body.toUpperCase();
    case 'transpose':
      return secret.slice(0, at - 1) + (secret[at] ?? '') + (secret[at - 1] ?? '') + secret.slice(at + 1);
    case 'bodyOnly':
      return body;
  }
}

/** A secret of `pool` as is, or almost (one character changed, prefix case, a character dropped or added...). */
export function secretLike(pool: readonly string[]): fc.Arbitrary<string> {
  const frozen = [...pool];
  return fc
    .record({ index: fc.nat(), kind: fc.constantFrom(...MUTATIONS), position: fc.nat(), char: fc.constantFrom(...BASE62) })
    .map(({ index, kind, position, char }) => mutateSecret(frozen[index % frozen.length] as string, kind, position, char));
}

/** Lengths just around the limits of the contract, in characters that are one, two or four bytes, or one or two UTF-16 units. */
export function aroundLimits(lengths: readonly number[] = [63, 64, 65, 127, 128, 129, 199, 200, 201, 255, 256, 257, 511, 512, 513, 1_000, 1_001, 5_000]): fc.Arbitrary<string> {
  return fc
    .record({
      length: fc.constantFrom(...lengths),
      char: fc.constantFrom('a', 'Z', '0', 'é', '😀', ' ', '\u0000'),
      shape: fc.constantFrom('repeat', 'lastWide', 'padded'),
    })
    .map(({ length, char, shape }) => {
      if (shape === 'lastWide') return 'a'.repeat(Math.max(0, length - 1)) + '😀';
      if (shape === 'padded') return ` ${char.repeat(Math.max(0, length - 2))} `;
      return char.repeat(length);
    });
}

/** Arbitrary text: unicode and ASCII, specials, lone surrogates, strings around the limits, secrets and near-misses. */
export function hostileText(pool: readonly string[] = []): fc.Arbitrary<string> {
  const small = fc.oneof(
    { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 24 }) },
    { weight: 3, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
    { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((code) => String.fromCharCode(code)) },
  );
  const parts: Array<fc.WeightedArbitrary<string>> = [
    { weight: 6, arbitrary: small },
    { weight: 2, arbitrary: fc.array(small, { minLength: 2, maxLength: 4 }).map((texts) => texts.join('')) },
    { weight: 1, arbitrary: aroundLimits() },
  ];
  if (pool.length > 0) parts.push({ weight: 2, arbitrary: secretLike(pool) });
  return fc.oneof(...parts);
}

/** A string of `length` times one character (of one to four UTF-8 bytes), e.g. over the 1 MiB receive limit. */
export function repeatedText(minLength: number, maxLength: number, chars: readonly string[] = ['a', 'é', '😀', '\u0000', ' ']): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom(...chars), fc.integer({ min: minLength, max: maxLength })).map(([char, length]) => {
    const units = Math.max(1, Math.floor(length / char.length));
    return char.repeat(units);
  });
}

/** A well-formed key that was never issued: prefix, 43 base62 characters, and their valid CRC32 checksum. */
export function wellFormedSecret(prefix: string, random: Uint8Array): string {
  const base62 = (value: bigint, width: number): string => {
    let out = '';
    for (let i = 0; i < width; i++) {
      out = (BASE62[Number(value % 62n)] as string) + out;
      value /= 62n;
    }
    return out;
  };
  const head = prefix + base62(BigInt(`0x${Buffer.from(random).toString('hex') || '0'}`), 43);
  return head + base62(BigInt(crc32(head)), 6);
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

const octet = fc.integer({ min: 0, max: 255 });
const hextet = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
export const ipv4 = fc.tuple(octet, octet, octet, octet).map((parts) => parts.join('.'));
export const ipv6 = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((bytes) => ipaddr.fromByteArray(Array.from(bytes)).toString()),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((bytes) => (ipaddr.fromByteArray(Array.from(bytes)) as ipaddr.IPv6).toNormalizedString()),
  fc.tuple(fc.constantFrom('2001:db8', 'fe80', 'ff02', '2001:db8:0:0', 'fd00:1'), hextet).map(([head, tail]) => `${head}::${tail}`),
  fc.constantFrom('::', '::1', '2001:DB8::1', '2001:0db8:0000:0000:0000:0000:0000:0001', 'FE80::A'),
);

/** Whitelist entries: valid addresses and ranges of both families, and the known traps. */
export function whitelistEntry(pool: readonly string[] = []): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: ipv4 },
    { weight: 3, arbitrary: fc.tuple(ipv4, fc.integer({ min: 0, max: 32 })).map(([a, bits]) => `${a}/${bits}`) },
    { weight: 3, arbitrary: ipv6 },
    { weight: 2, arbitrary: fc.tuple(ipv6, fc.integer({ min: 0, max: 128 })).map(([a, bits]) => `${a}/${bits}`) },
    { weight: 2, arbitrary: ipv4.map((a) => `::ffff:${a}`) },
    { weight: 1, arbitrary: fc.tuple(ipv4, fc.integer({ min: 64, max: 128 })).map(([a, bits]) => `::ffff:${a}/${bits}`) },
    // IPv4-compatible (deprecated) and other dotted IPv6 forms.
    { weight: 1, arbitrary: ipv4.map((a) => `::${a}`) },
    // Zone ids.
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom('fe80::1', 'fe80::', '2001:db8::1', '::1'), fc.constantFrom('eth0', '1', 'lo', '25eth0', ''), fc.constantFrom('', '/64', '/128'))
        .map(([a, zone, bits]) => `${a}%${zone}${bits}`),
    },
    // Leading zeros, fewer parts, hex and octal.
    {
      weight: 2,
      arbitrary: fc
        .tuple(octet, octet, octet, octet, fc.integer({ min: 0, max: 3 }), fc.constantFrom('0', '00'), fc.constantFrom('', '/8', '/24', '/32'))
        .map(([a, b, c, d, which, zeros, bits]) => {
          const parts = [a, b, c, d].map(String);
          parts[which] = zeros + parts[which];
          return parts.join('.') + bits;
        }),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom('10.1', '10', '10.0.1', '0x7f.0.0.1', '017700000001', '2130706433', '1.2.3.4.5', '256.1.1.1', '1.2.3.-4', '::ffff:010.0.0.1', '1:2:3:4:5:6:1.2.3.4'),
    },
    // Broken ranges.
    {
      weight: 1,
      arbitrary: fc.constantFrom('1.2.3.4/33', '::/129', '1.2.3.4/-1', '1.2.3.4/', '/24', '1.2.3.4/8/8', '1.2.3.4/ 8', '1.2.3.4/08', '2001:db8::/032', '1.2.3.4/1e1'),
    },
    // Whitespace, NUL, markup, overlong.
    { weight: 1, arbitrary: fc.tuple(ipv4, fc.constantFrom(' ', '\t', '\n')).map(([a, space]) => `${space}${a}${space}`) },
    { weight: 1, arbitrary: fc.tuple(ipv4, fc.constantFrom('\u0000', '\u0000x', '%00', ' x')).map(([a, tail]) => a + tail) },
    { weight: 1, arbitrary: fc.constantFrom(MARKUP, '', 'localhost', 'a'.repeat(65), `1.2.3.4${' '.repeat(60)}`, `${'0'.repeat(61)}::1`, '*', '0.0.0.0/0', '::/0') },
    { weight: 2, arbitrary: hostileText(pool) },
  );
}

/** Client addresses around the test whitelist 203.0.113.0/24 and 2001:db8::/32, and the traps. */
export function clientIp(pool: readonly string[] = []): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 3, arbitrary: octet.map((o) => `203.0.113.${o}`) },
    { weight: 2, arbitrary: fc.tuple(hextet, hextet).map(([a, b]) => `2001:db8:${a}::${b}`) },
    { weight: 2, arbitrary: octet.map((o) => `::ffff:203.0.113.${o}`) },
    { weight: 3, arbitrary: fc.oneof(ipv4, ipv6, ipv4.map((a) => `::ffff:${a}`)) },
    { weight: 1, arbitrary: octet.map((o) => `::203.0.113.${o}`) },
    { weight: 1, arbitrary: fc.constantFrom('2001:db8::1%eth0', 'fe80::1%eth0', '2001:db8::1%', '::ffff:203.0.113.9%1') },
    { weight: 1, arbitrary: fc.constantFrom('203.0.113.010', '203.000.113.5', '0313.0.113.5', '203.0.113', '0xcb.0.113.5', '3405803781', '::ffff:203.0.113.05') },
    { weight: 1, arbitrary: fc.tuple(octet, fc.constantFrom(' ', '\t', '\n')).map(([o, space]) => `${space}203.0.113.${o}${space}`) },
    { weight: 1, arbitrary: fc.constantFrom('1.2.3.4\u0000x', '203.0.113.5\u0000', '203.0.113.5\u0000x', MARKUP, '', 'localhost', 'unknown', '-', '203.0.113.5, 10.0.0.1', '[2001:db8::1]', '203.0.113.5:443', '2001:db8::1/64') },
    { weight: 2, arbitrary: hostileText(pool) },
  );
}

// ---------------------------------------------------------------------------
// Scopes, ids, page tokens, timestamps
// ---------------------------------------------------------------------------

export function scopeText(pool: readonly string[] = []): fc.Arbitrary<string> {
  const variant = fc
    .tuple(fc.constantFrom(...SCOPES), fc.constantFrom('upper', 'title', 'space', 'trailing', 'nul', 'dot', 'star', 'plural', 'fullwidth'))
    .map(([scope, how]) => {
      switch (how) {
        case 'upper':
          return scope.toUpperCase();
        case 'title':
          return scope[0]?.toUpperCase() + scope.slice(1);
        case 'space':
          return ` ${scope}`;
        case 'trailing':
          return `${scope} `;
        case 'nul':
          return `${scope}\u0000`;
        case 'dot':
          return scope.replace(':', '.');
        case 'star':
          return scope.replace(/:.*/, ':*');
        case 'plural':
          return `${scope}s`;
        case 'fullwidth':
          return scope.replace(':', '\uff1a');
      }
      return scope;
    });
  return fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...SCOPES) },
    { weight: 2, arbitrary: variant },
    { weight: 1, arbitrary: fc.constantFrom('jobs:delete', 'admin:all', '*', 'jobs', ':read', 'JOBS:READ') },
    { weight: 1, arbitrary: hostileText(pool) },
  );
}

/** A list of `entry`, mostly short, sometimes thousands long (the entries of a short list repeated). */
export function hostileList(entry: fc.Arbitrary<string>, options: { maxShort?: number; longLength: fc.Arbitrary<number> }): fc.Arbitrary<string[]> {
  const long = fc
    .tuple(fc.array(entry, { minLength: 1, maxLength: 4 }), options.longLength)
    .map(([base, length]) => Array.from({ length }, (_, i) => base[i % base.length] as string));
  return fc.oneof({ weight: 9, arbitrary: fc.array(entry, { maxLength: options.maxShort ?? 6 }) }, { weight: 1, arbitrary: long });
}

/** Key ids: the known ones, unknown UUIDs, and almost-UUIDs. */
export function keyIdText(known: readonly string[], pool: readonly string[] = []): fc.Arbitrary<string> {
  const knownId = fc.constantFrom(...known);
  return fc.oneof(
    { weight: 6, arbitrary: knownId },
    { weight: 2, arbitrary: fc.uuid() },
    {
      weight: 3,
      arbitrary: fc.tuple(knownId, fc.constantFrom('upper', 'braces', 'nodashes', 'urn', 'space', 'nul', 'g', 'short', 'long')).map(([id, how]) => {
        switch (how) {
          case 'upper':
            return id.toUpperCase();
          case 'braces':
            return `{${id}}`;
          case 'nodashes':
            return id.replaceAll('-', '');
          case 'urn':
            return `urn:uuid:${id}`;
          case 'space':
            return ` ${id}`;
          case 'nul':
            return `${id}\u0000`;
          case 'g':
            return `g${id.slice(1)}`;
          case 'short':
            return id.slice(0, -1);
          case 'long':
            return `${id}0`;
        }
        return id;
      }),
    },
    { weight: 1, arbitrary: fc.constantFrom('00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', "'; select pg_sleep(1); --") },
    { weight: 2, arbitrary: hostileText(pool) },
  );
}

/** Page tokens forged like ListKeys' own (base64url of JSON), with every field bent. */
export function forgedPageToken(accounts: readonly string[]): fc.Arbitrary<string> {
  return fc
    .record({
      v: fc.constantFrom<unknown>(1, 1, 2, '1', 0, undefined),
      a: fc.constantFrom<unknown>(...accounts, '', 123, null),
      r: fc.constantFrom<unknown>(false, true, 'false', 0),
      s: fc.constantFrom<unknown>(
        '1',
        '2',
        '5',
        '0',
        '007',
        '9223372036854775807',
        '9223372036854775808',
        '9999999999999999999',
        '99999999999999999999',
        '-1',
        '-9223372036854775808',
        'abc',
        '1e3',
        ' 1',
        '',
        '1.5',
        5,
        null,
        '1; drop table keyward.api_keys',
      ),
      extra: fc.boolean(),
      encoding: fc.constantFrom('base64url', 'base64url', 'base64url', 'base64', 'hex', 'raw'),
    })
    .map(({ v, a, r, s, extra, encoding }) => {
      const json = JSON.stringify({ v, a, r, s, ...(extra ? { x: 'y' } : {}) });
      if (encoding === 'raw') return json;
      return Buffer.from(json).toString(encoding as BufferEncoding);
    });
}

/** expires_at: unset, relative to the call's time, or raw seconds and nanos of any size. */
export type TimestampSpec = { readonly relativeMs: number; readonly nanos?: number } | { readonly seconds: bigint; readonly nanos: number } | undefined;

const YEAR_MS = 365.25 * 86_400_000;
/** 10000-01-01T00:00:00Z in seconds: the first instant the contract refuses. */
export const YEAR_10000_SECONDS = 253_402_300_800n;

export const timestampSpec: fc.Arbitrary<TimestampSpec> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.integer({ min: 60_000, max: Math.floor(7_000 * YEAR_MS) }).map((relativeMs) => ({ relativeMs })) },
  { weight: 2, arbitrary: fc.integer({ min: -Math.floor(100 * YEAR_MS), max: -2_000 }).map((relativeMs) => ({ relativeMs })) },
  { weight: 1, arbitrary: fc.integer({ min: Math.floor(8_100 * YEAR_MS), max: Math.floor(300_000 * YEAR_MS) }).map((relativeMs) => ({ relativeMs })) },
  // A time in the future whose nanos are outside 0..999,999,999 (google.protobuf.Timestamp forbids them).
  {
    weight: 1,
    arbitrary: fc.record({
      relativeMs: fc.integer({ min: 3_600_000, max: Math.floor(100 * YEAR_MS) }),
      nanos: fc.oneof(fc.constantFrom(1_000_000_000, -1, 2 ** 31 - 1, -(2 ** 31)), fc.integer({ min: 1_000_000_000, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 })),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      seconds: fc.oneof(
        fc.constantFrom(-(2n ** 63n), -(2n ** 53n), -62_135_596_800n, -1n, 0n, 1n, YEAR_10000_SECONDS - 1n, YEAR_10000_SECONDS, 2n ** 53n, 2n ** 63n - 1n),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      ),
      nanos: fc.oneof(fc.constantFrom(0, 1, 999_999_999, 1_000_000_000, -1, 2 ** 31 - 1, -(2 ** 31)), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
    }),
  },
);

/** Byte sequences that are not UTF-8: overlong forms, surrogates, truncated and out-of-range sequences. */
const INVALID_UTF8: readonly number[][] = [
  [0xff],
  [0xfe],
  [0x80],
  [0xbf],
  [0xc0, 0x80],
  [0xc0, 0xaf],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xc3],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
];

/** Bytes holding at least one invalid UTF-8 sequence, among valid text. */
export function invalidUtf8(pool: readonly string[] = []): fc.Arbitrary<Uint8Array> {
  const valid = fc.oneof(fc.string({ unit: 'binary', maxLength: 8 }), fc.constantFrom('jobs:read', '203.0.113.5', ...pool.slice(0, 4))).map((text) => Buffer.from(text, 'utf8'));
  const invalid = fc.constantFrom(...INVALID_UTF8).map((bytes) => Uint8Array.from(bytes));
  const any = fc.oneof(valid, invalid, fc.uint8Array({ maxLength: 8 }));
  return fc.tuple(fc.array(any, { maxLength: 3 }), invalid, fc.array(any, { maxLength: 3 })).map(([before, bad, after]) => concatBytes(...before, bad, ...after));
}

/** Byte strings that break protobuf framing: truncated varints and lengths, invalid wire types, open groups. */
export const MALFORMED_PROTOBUF: readonly number[][] = [
  [0x08, 0xff],
  [0x0a],
  [0x0a, 0x05, 0x61],
  [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
  [0x0b],
  [0x0e, 0x01],
  [0x0f],
  [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x11, 0x01, 0x02],
  [0x15, 0x01],
  [0x80],
  [0x12, 0x02, 0x0a],
  [0x1a, 0x03, 0x0a, 0x09],
  [0x32, 0x04, 0x08, 0xff, 0xff, 0xff],
];

/** Malformed encodings of a valid message: the known breakers, the message cut short, garbage appended, random bytes. */
export function malformedBytes(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.constantFrom(...MALFORMED_PROTOBUF).map((bytes) => Uint8Array.from(bytes)),
    fc.integer({ min: 1, max: Math.max(1, valid.length - 1) }).map((cut) => valid.slice(0, cut)),
    fc.constantFrom(...MALFORMED_PROTOBUF).map((bytes) => concatBytes(valid, Uint8Array.from(bytes))),
    fc.uint8Array({ minLength: 1, maxLength: 48 }),
  );
}

// ---------------------------------------------------------------------------
// Oracles: what the contract says, computed independently of src/
// ---------------------------------------------------------------------------

export type Verdict3 = 'ok' | 'bad' | 'maybe';

function codePoints(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/** Whether the length is within [min, max] characters; "maybe" when UTF-16 units and code points disagree. */
export function lengthClass(text: string, min: number, max: number): Verdict3 {
  const units = text.length >= min && text.length <= max;
  const points = codePoints(text);
  const byPoints = points >= min && points <= max;
  if (units && byPoints) return 'ok';
  if (!units && !byPoints) return 'bad';
  return 'maybe';
}

/** C0, DEL and C1: the control characters (Unicode Cc). */
export const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** Format, unassigned, private-use and separator characters: refusing them is beyond the contract, accepting them too. */
export const ODD = /[\p{Cf}\p{Cn}\p{Co}\p{Zl}\p{Zp}\p{Cs}]/u;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A key id as CreateKey returns it (lowercase UUID); an uppercase one may be accepted or not. */
export function uuidClass(text: string): Verdict3 {
  if (UUID.test(text)) return 'ok';
  if (UUID.test(text.toLowerCase())) return 'maybe';
  return 'bad';
}

const STRICT_V4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * An IPv6 address in plain RFC 4291 text (hex groups, `::`, no zone), or
 * IPv4-mapped with a strict dotted tail (`::ffff:203.0.113.7`). Other dotted
 * forms (`::1.2.3.4`, which ipaddr.js reads as mapped) are not strict.
 */
function strictV6(text: string): ipaddr.IPv6 | undefined {
  if (!text.includes(':') || !/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  let hex = text;
  if (text.includes('.')) {
    const tail = text.slice(text.lastIndexOf(':') + 1);
    if (!STRICT_V4.test(tail)) return undefined;
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number];
    hex = `${text.slice(0, text.lastIndexOf(':') + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  if (!/^[0-9A-Fa-f:]+$/.test(hex) || hex.split(':').some((group) => group.length > 4) || !ipaddr.IPv6.isValid(hex)) return undefined;
  const address = ipaddr.IPv6.parse(hex);
  if (text.includes('.') && !address.isIPv4MappedAddress()) return undefined;
  return address;
}

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** A plain address the contract reads without doubt, as IPv4 (mapped addresses included) or IPv6. */
function strictAddress(text: string): Address | undefined {
  if (STRICT_V4.test(text)) return ipaddr.IPv4.parse(text);
  const v6 = strictV6(text);
  if (v6 === undefined) return undefined;
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6;
}

function mask(address: Address, bits: number): Address {
  const bytes = address.toByteArray().map((byte, i) => byte & ((0xff << (8 - Math.max(0, Math.min(8, bits - i * 8)))) & 0xff));
  return ipaddr.fromByteArray(bytes);
}

/** The normalised form of a strictly valid whitelist entry (README: host bits cleared, /32 and /128 plain, mapped to IPv4), or undefined. */
export function strictEntry(text: string): string | undefined {
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  let address = STRICT_V4.test(addressText) ? ipaddr.IPv4.parse(addressText) : strictV6(addressText);
  if (address === undefined) return undefined;
  const width = address.kind() === 'ipv4' ? 32 : 128;
  let bits = width;
  if (slash !== -1) {
    const bitsText = text.slice(slash + 1);
    if (!/^(?:0|[1-9]\d{0,2})$/.test(bitsText) || Number(bitsText) > width) return undefined;
    bits = Number(bitsText);
  }
  if (address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress() && bits >= 96) {
    address = address.toIPv4Address();
    bits -= 96;
  }
  const network = mask(address, bits);
  return bits === (network.kind() === 'ipv4' ? 32 : 128) ? network.toString() : `${network.toString()}/${bits}`;
}

export type EntryClass = { readonly label: 'valid'; readonly canonical: string } | { readonly label: 'invalid' | 'maybe' };

/**
 * A whitelist entry by the contract: at most 64 characters, an address or
 * CIDR range; no zone id; IPv4 only as four decimal parts without leading
 * zeros. "maybe" where the contract is silent: surrounding whitespace,
 * IPv4-compatible and other dotted IPv6 forms, prefix lengths with leading zeros.
 */
export function classifyEntry(text: string): EntryClass {
  if (text.length === 0 || text.length > 64) return { label: 'invalid' };
  const canonical = strictEntry(text);
  if (canonical !== undefined) return { label: 'valid', canonical };
  const trimmed = text.trim();
  if (trimmed !== text) return trimmed.length > 0 && (strictEntry(trimmed) !== undefined || looseEntry(trimmed)) ? { label: 'maybe' } : { label: 'invalid' };
  return looseEntry(text) ? { label: 'maybe' } : { label: 'invalid' };
}

/** Entries the contract neither clearly allows nor clearly refuses. */
function looseEntry(text: string): boolean {
  if (text.includes('%') || !/^[0-9A-Fa-f:./]+$/.test(text)) return false;
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const bitsText = slash === -1 ? '' : text.slice(slash + 1);
  if (slash !== -1 && !/^\d{1,3}$/.test(bitsText)) return false;
  if (slash !== -1 && strictAddress(addressText) !== undefined) return /^0\d/.test(bitsText) && Number(bitsText) <= 128;
  // Dotted IPv6 that is not plainly mapped: ::1.2.3.4, 1:2:3:4:5:6:1.2.3.4, ::ffff:010.0.0.1.
  return addressText.includes(':') && addressText.includes('.') && ipaddr.IPv6.isValid(addressText);
}

/** Whether a stored entry is in normal form (what a successful call must have stored). */
export function isCanonicalEntry(text: string): boolean {
  return text.length <= 64 && strictEntry(text) === text;
}

export interface ClientIpClass {
  /** The canonical address when the text is plainly an address (README: four decimal parts, ::ffff: mapped as IPv4, other IPv6 compressed). */
  readonly strict?: string;
  /**
   * For dotted IPv6 forms other than ::ffff:a.b.c.d (`::1.2.3.4`, which
   * ipaddr.js reads as mapped; `::ffff:010.0.0.1`): the addresses either
   * reading makes of it. Empty: not an address at all (leading zeros, fewer
   * parts, zone ids, whitespace, names, markup), so "no address".
   */
  readonly candidates: readonly string[];
}

export function classifyClientIp(text: string): ClientIpClass {
  const strict = strictAddress(text);
  if (strict !== undefined) return { strict: strict.toString(), candidates: [strict.toString()] };
  const candidates = new Set<string>();
  if (/^[0-9A-Fa-f:.]+$/.test(text) && text.includes(':') && text.includes('.') && ipaddr.IPv6.isValid(text)) {
    try {
      candidates.add(ipaddr.process(text).toString());
      candidates.add(ipaddr.IPv6.parse(text).toString());
      const tail = text.slice(text.lastIndexOf(':') + 1);
      if (STRICT_V4.test(tail)) {
        const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number];
        candidates.add(ipaddr.IPv6.parse(`${text.slice(0, text.lastIndexOf(':') + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`).toString());
      }
    } catch {
      // not an address after all
    }
  }
  return { candidates: [...candidates] };
}

function inEntry(address: string, entry: string): boolean {
  const parsed = ipaddr.parse(address);
  const [network, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : [ipaddr.parse(entry), entry.includes(':') ? 128 : 32];
  return parsed.kind() === network.kind() && parsed.match(network, bits);
}

/** Whether a key with these (normalised) whitelist entries may be used from `text`: yes, no, or either. */
export function allowedFrom(whitelist: readonly string[], text: string): Verdict3 {
  if (whitelist.length === 0) return 'ok';
  const { strict, candidates } = classifyClientIp(text);
  const inside = (address: string): boolean => whitelist.some((entry) => inEntry(address, entry));
  if (strict !== undefined) return inside(strict) ? 'ok' : 'bad';
  return candidates.some(inside) ? 'maybe' : 'bad';
}

// ---------------------------------------------------------------------------
// Running a property: seed, path and a readable counterexample on failure
// ---------------------------------------------------------------------------

/** JSON text of a string with invisible characters (format, separators, controls) escaped as well. */
function visible(text: string): string {
  return JSON.stringify(text).replace(/[\p{C}\p{Z}]/gu, (char) => (char === ' ' ? char : `\\u${(char.codePointAt(0) as number).toString(16).padStart(4, '0')}`));
}

/** A value as short readable text: long strings and byte arrays cut, with their sizes; invisible characters escaped. */
export function summarize(value: unknown, depth = 0): string {
  if (typeof value === 'string') {
    if (value.length <= 160) return visible(value);
    const first = value[0] ?? '';
    if (value === first.repeat(value.length / first.length)) return `${visible(first)}.repeat(${value.length / first.length})`;
    return `${visible(value.slice(0, 80))}…(${value.length} chars)`;
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  if (value instanceof Uint8Array) {
    const hex = Buffer.from(value.subarray(0, 48)).toString('hex');
    return value.length <= 48 ? `bytes(${hex})` : `bytes(${hex}…, ${value.length} bytes)`;
  }
  if (depth > 6) return '…';
  if (Array.isArray(value)) {
    const shown = value.slice(0, 12).map((item) => summarize(item, depth + 1));
    return `[${shown.join(', ')}${value.length > 12 ? `, …(${value.length} items)` : ''}]`;
  }
  if (value !== null && typeof value === 'object') {
    return `{ ${Object.entries(value)
      .map(([key, item]) => `${key}: ${summarize(item, depth + 1)}`)
      .join(', ')} }`;
  }
  return String(value);
}

export interface PropertyOptions {
  readonly numRuns: number;
  /** Stop at the first failure without shrinking (for properties whose failure damages the server's state). */
  readonly endOnFailure?: boolean;
  /** Bound on the time spent, shrinking included; the failure found so far is reported. */
  readonly timeLimitMs?: number;
}

/**
 * Runs a property with fast-check. On failure, throws an error holding the
 * seed and path, the replay command, the (shortened) counterexample and what
 * went wrong. KEYWARD_PROPERTY_SEED replays a seed for every property;
 * KEYWARD_PROPERTY_PATH with KEYWARD_PROPERTY_NAME (part of the property's
 * name) replays one counterexample; KEYWARD_PROPERTY_RUNS_FACTOR scales the runs.
 */
export async function checkProperty<Ts>(name: string, property: fc.IAsyncProperty<Ts>, options: PropertyOptions): Promise<void> {
  const seedText = process.env.KEYWARD_PROPERTY_SEED;
  const seed = seedText !== undefined && seedText !== '' ? Number(seedText) : undefined;
  const replayName = process.env.KEYWARD_PROPERTY_NAME;
  const path = process.env.KEYWARD_PROPERTY_PATH !== undefined && replayName !== undefined && name.includes(replayName) ? process.env.KEYWARD_PROPERTY_PATH : undefined;
  const factor = Number(process.env.KEYWARD_PROPERTY_RUNS_FACTOR ?? '1') || 1;
  const parameters: fc.Parameters<Ts> = {
    numRuns: Math.max(1, Math.round(options.numRuns * factor)),
    endOnFailure: options.endOnFailure ?? false,
    ...(seed !== undefined ? { seed } : {}),
    ...(path !== undefined ? { path } : {}),
    ...(options.timeLimitMs !== undefined ? { interruptAfterTimeLimit: options.timeLimitMs, markInterruptAsFailure: false } : {}),
    asyncReporter: async (details) => {
      if (!details.failed) {
        if (details.interrupted) console.log(`property "${name}": the time limit allowed ${details.numRuns} of ${parameters.numRuns} runs (all passed)`);
        return;
      }
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      throw new Error(
        [
          `Property "${name}" failed after ${details.numRuns} run(s) (shrunk ${details.numShrinks} time(s)${details.interrupted ? ', shrinking cut short by the time limit' : ''})`,
          `{ seed: ${details.seed}, path: "${details.counterexamplePath}", endOnFailure: true }`,
          `Replay: KEYWARD_PROPERTY_SEED=${details.seed} KEYWARD_PROPERTY_PATH="${details.counterexamplePath}" KEYWARD_PROPERTY_NAME="${name}" npm test -- test/rpc.hostile.property.test.ts`,
          `Counterexample: ${summarize(details.counterexample)}`,
          `Got: ${error.length > 4_000 ? `${error.slice(0, 4_000)}…` : error}`,
        ].join('\n'),
      );
    },
  };
  await fc.assert(property, parameters);
}
