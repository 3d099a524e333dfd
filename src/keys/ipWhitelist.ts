import ipaddr from 'ipaddr.js';
import { invalidArgument } from '../errors';
import { LIMITS } from './fields';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** Entries one key may carry; a longer list is refused as oversized. */
export const MAX_WHITELIST_ENTRIES = LIMITS.whitelistEntries;
const MAX_ENTRY_LENGTH = LIMITS.whitelistEntryLength;

/**
 * Validates whitelist entries and returns them normalised, without duplicates,
 * in the order given: an address in its canonical text (`203.0.113.7`,
 * `2001:db8::1`), a range as `network/length` with the host bits cleared
 * (`203.0.113.7/24` becomes `203.0.113.0/24`). IPv4-mapped IPv6 entries
 * (`::ffff:203.0.113.0/120`) become the IPv4 entries they mean.
 */
export function normaliseWhitelist(field: string, entries: readonly string[]): string[] {
  if (entries.length > MAX_WHITELIST_ENTRIES) {
    throw invalidArgument(field, `${entries.length} entries`, `at most ${MAX_WHITELIST_ENTRIES} entries are allowed`);
  }
  const out = new Set<string>();
  entries.forEach((entry, i) => out.add(normaliseEntry(`${field}[${i}]`, entry)));
  return [...out];
}

function normaliseEntry(field: string, raw: string): string {
  const text = raw.trim();
  if (text.length === 0 || raw.length > MAX_ENTRY_LENGTH) {
    throw invalidArgument(field, raw, `must be an IP address or CIDR range of 1 to ${MAX_ENTRY_LENGTH} characters`);
  }
  const isRange = text.includes('/');
  if (!(isRange ? ipaddr.isValidCIDR(text) : ipaddr.isValid(text)) || text.includes('%')) {
    throw invalidArgument(field, raw, 'not an IP address or CIDR range (e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32)');
  }
  let [address, bits]: [Address, number] = isRange ? ipaddr.parseCIDR(text) : [ipaddr.parse(text), -1];
  const compatible = ipv4Compatible(isRange ? text.slice(0, text.indexOf('/')) : text);
  if (compatible === null) throw invalidArgument(field, raw, 'not an IP address or CIDR range (e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32)');
  if (compatible !== undefined) address = compatible;
  if (address.kind() === 'ipv4' && !(isRange ? ipaddr.IPv4.isValidCIDRFourPartDecimal(text) : ipaddr.IPv4.isValidFourPartDecimal(text))) {
    throw invalidArgument(field, raw, 'IPv4 addresses must be written as four decimal parts, e.g. 203.0.113.7');
  }
  const width = address.kind() === 'ipv4' ? 32 : 128;
  if (bits === -1) bits = width;
  if (address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress() && bits >= 96) {
    address = address.toIPv4Address();
    bits -= 96;
  }
  const network = maskAddress(address, bits);
  return bits === (network.kind() === 'ipv4' ? 32 : 128) ? network.toString() : `${network.toString()}/${bits}`;
}

/** `::a.b.c.d`, the deprecated IPv4-compatible IPv6 form (RFC 4291 2.5.5.1). */
const IPV4_COMPATIBLE = /^::(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;

/**
 * ipaddr.js reads the IPv4-compatible `::a.b.c.d` as IPv4-mapped
 * `::ffff:a.b.c.d`; RFC 4291 makes it the IPv6 address `::a.b:c.d` (e.g.
 * `::1.2.3.4` is `::102:304`, not 1.2.3.4). This returns that address for
 * the form, null for the form with an IPv4 part that is not four plain
 * decimal parts, and undefined for anything else.
 */
export function ipv4Compatible(text: string): ipaddr.IPv6 | null | undefined {
  const match = IPV4_COMPATIBLE.exec(text);
  if (match === null) return undefined;
  const quad = match[1] as string;
  if (!ipaddr.IPv4.isValidFourPartDecimal(quad)) return null;
  const [a, b, c, d] = ipaddr.IPv4.parse(quad).octets as [number, number, number, number];
  return new ipaddr.IPv6([0, 0, 0, 0, 0, 0, (a << 8) | b, (c << 8) | d]);
}

function maskAddress(address: Address, bits: number): Address {
  const bytes = address.toByteArray().map((byte, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
  return ipaddr.fromByteArray(bytes);
}

/**
 * Decides whether a client address may use a key; built once per cached key.
 * Verify passes the canonical address (src/keys/clientIp.ts); any spelling
 * is understood all the same.
 */
export type IpCheck = (clientIp: string) => boolean;

const allowAll: IpCheck = () => true;

/**
 * Compiles normalised whitelist entries into a check. An empty whitelist
 * allows every address, even a missing one; a non-empty one refuses a missing
 * or unparseable address. IPv4-mapped IPv6 client addresses match IPv4 entries.
 * IPv4 ranges are compared as 32-bit integers, without allocation.
 */
export function compileWhitelist(entries: readonly string[]): IpCheck {
  if (entries.length === 0) return allowAll;
  // IPv4 ranges as flat pairs of signed 32-bit integers [network, mask, …]: small, and compared without allocating.
  const v4: number[] = [];
  const v6: Array<[ipaddr.IPv6, number]> = [];
  for (const entry of entries) {
    const [address, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : [ipaddr.parse(entry), -1];
    if (address instanceof ipaddr.IPv4) {
      const mask = bits === -1 || bits === 32 ? -1 : bits === 0 ? 0 : -1 << (32 - bits);
      v4.push(toInt32(address) & mask, mask);
    } else {
      v6.push([address as ipaddr.IPv6, bits === -1 ? 128 : bits]);
    }
  }
  return (clientIp: string): boolean => {
    // Fast path: a dotted-quad IPv4 address, parsed without allocating.
    const quad = parseDottedQuad(clientIp);
    if (quad >= 0) return matchesV4(v4, quad | 0);
    const address = parseClientIp(clientIp);
    if (address === undefined) return false;
    if (address instanceof ipaddr.IPv4) return matchesV4(v4, toInt32(address) | 0);
    for (const range of v6) if (address.match(range)) return true;
    return false;
  };
}

/** Whether `value` (a signed 32-bit address) is in one of the flat [network, mask] pairs. */
function matchesV4(ranges: readonly number[], value: number): boolean {
  for (let i = 0; i < ranges.length; i += 2) if ((value & (ranges[i + 1] as number)) === ranges[i]) return true;
  return false;
}

/**
 * An IPv4 address written as four decimal parts (no leading zeros, as
 * ipaddr.js's isValidFourPartDecimal) as an unsigned 32-bit integer; -1 for
 * anything else, which then goes the general way.
 */
export function parseDottedQuad(text: string): number {
  const length = text.length;
  if (length < 7 || length > 15) return -1;
  let value = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= length; i++) {
    const c = i === length ? 46 : text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return -1;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1;
      part = part * 10 + (c - 48);
      digits++;
      if (digits > 3) return -1;
    } else {
      return -1;
    }
  }
  return parts === 4 ? value : -1;
}

/** A client address as ipaddr.js reads it, IPv4-mapped IPv6 turned into IPv4; undefined when unparseable. */
function parseClientIp(clientIp: string): Address | undefined {
  if (clientIp.length === 0 || clientIp.length > MAX_ENTRY_LENGTH || !ipaddr.isValid(clientIp) || clientIp.includes('%')) return undefined;
  const compatible = ipv4Compatible(clientIp);
  if (compatible !== undefined) return compatible ?? undefined;
  const address = ipaddr.process(clientIp);
  if (address instanceof ipaddr.IPv4 && !clientIp.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(clientIp)) return undefined;
  return address;
}

/** The address as a signed 32-bit integer (the form the ranges are compared in). */
function toInt32(address: ipaddr.IPv4): number {
  const [a, b, c, d] = address.octets as [number, number, number, number];
  return (a << 24) | (b << 16) | (c << 8) | d;
}
