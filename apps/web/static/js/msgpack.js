// The msgpack encoder an annotation record needs: non-negative and negative integers, UTF-8
// strings, byte arrays and arrays, each in msgpack's shortest form. Python's
// msgpack.packb(use_bin_type=True) writes the same bytes, which the record's digest and
// signature depend on (engine/curation/records.py documents the record).

const UTF8 = new TextEncoder();

export function encode(value) {
  const writer = new Writer();
  writer.value(value);
  return writer.bytes();
}

class Writer {
  constructor() {
    this.buffer = new Uint8Array(256);
    this.length = 0;
  }

  bytes() {
    return this.buffer.slice(0, this.length);
  }

  reserve(n) {
    if (this.length + n <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  push(...bytes) {
    this.reserve(bytes.length);
    for (const b of bytes) this.buffer[this.length++] = b;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  // a big-endian unsigned integer of `width` bytes after a one-byte type tag
  tagged(tag, n, width) {
    this.reserve(1 + width);
    this.buffer[this.length++] = tag;
    const view = new DataView(this.buffer.buffer, this.length, width);
    if (width === 1) view.setUint8(0, n);
    else if (width === 2) view.setUint16(0, n);
    else if (width === 4) view.setUint32(0, n);
    else view.setBigUint64(0, BigInt.asUintN(64, BigInt(n)));
    this.length += width;
  }

  value(v) {
    if (typeof v === "number") this.int(v);
    else if (typeof v === "string") this.str(v);
    else if (v instanceof Uint8Array) this.bin(v);
    else if (Array.isArray(v)) this.array(v);
    else throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
  }

  int(n) {
    if (!Number.isSafeInteger(n)) throw new RangeError("msgpack: integers must be safe integers");
    if (n >= 0) {
      if (n < 0x80) this.push(n);
      else if (n < 0x100) this.tagged(0xcc, n, 1);
      else if (n < 0x10000) this.tagged(0xcd, n, 2);
      else if (n < 0x100000000) this.tagged(0xce, n, 4);
      else this.tagged(0xcf, n, 8);
    } else if (n >= -32) this.push(n & 0xff);
    else if (n >= -0x80) this.tagged(0xd0, n & 0xff, 1);
    else if (n >= -0x8000) this.tagged(0xd1, n & 0xffff, 2);
    else if (n >= -0x80000000) this.tagged(0xd2, n >>> 0, 4);
    else this.tagged(0xd3, n, 8);
  }

  str(s) {
    const bytes = UTF8.encode(s);
    const n = bytes.length;
    if (n < 32) this.push(0xa0 | n);
    else if (n < 0x100) this.tagged(0xd9, n, 1);
    else if (n < 0x10000) this.tagged(0xda, n, 2);
    else this.tagged(0xdb, n, 4);
    this.raw(bytes);
  }

  bin(bytes) {
    const n = bytes.length;
    if (n < 0x100) this.tagged(0xc4, n, 1);
    else if (n < 0x10000) this.tagged(0xc5, n, 2);
    else this.tagged(0xc6, n, 4);
    this.raw(bytes);
  }

  array(items) {
    const n = items.length;
    if (n < 16) this.push(0x90 | n);
    else if (n < 0x10000) this.tagged(0xdc, n, 2);
    else this.tagged(0xdd, n, 4);
    for (const item of items) this.value(item);
  }
}
