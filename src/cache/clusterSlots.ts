/**
 * Redis Cluster's key → slot mapping (the cluster specification: CRC16-XMODEM
 * of the key, or of its hash tag, modulo 16384), so that keyward can name a
 * key that lands in a slot it chooses (a write witness per master).
 */
export const SLOT_COUNT = 16_384;

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[byte] = crc;
  }
  return table;
})();

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc;
}

/** The slot of `key`: of its hash tag (the first `{…}` with something inside) when it has one. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key, 'utf8')) % SLOT_COUNT;
}

const tags = new Map<number, string>();

/** A short hash tag (`w<n>`, found by search, remembered) whose slot is `slot`. */
export function tagForSlot(slot: number): string {
  const known = tags.get(slot);
  if (known !== undefined) return known;
  // About 16,384 tries on average, once per slot a process ever needs.
  for (let n = 0; ; n++) {
    const tag = `w${n}`;
    if (keySlot(tag) === slot) {
      tags.set(slot, tag);
      return tag;
    }
  }
}
