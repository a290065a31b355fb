// Annotation records built and signed in the browser, byte for byte as
// engine/curation/records.py documents them:
//   body      = msgpack [task, kind, annotator, seq, prev, [choice...], text, client_time_ms]
//   digest    = SHA-256(body)
//   signature = Ed25519("phalanx/annotation/v1" + digest) by the annotator's own key
//   record    = msgpack [body, signature]
import { concat } from "./bytes.js";
import { encode } from "./msgpack.js";

const DOMAIN = new TextEncoder().encode("phalanx/annotation/v1");
export const GENESIS = new Uint8Array(32); // `prev` of an annotator's first record

function bodyArray(f) {
  for (const name of ["task", "annotator", "prev"]) {
    if (!(f[name] instanceof Uint8Array) || f[name].length !== 32) {
      throw new TypeError(`${name} must be 32 bytes`);
    }
  }
  return [f.task, f.kind, f.annotator, f.seq, f.prev, [...f.choice], f.text, f.clientTimeMs];
}

/** The record body's exact bytes for the fields {task, kind, annotator, seq, prev, choice,
 * text, clientTimeMs} (byte fields as Uint8Array). */
export function encodeBody(fields) {
  return encode(bodyArray(fields));
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** {digest, record}: the signed record for `fields`, signed with `privateKey` (a WebCrypto
 * Ed25519 key whose public half is `fields.annotator`). */
export async function signRecord(privateKey, fields) {
  const body = bodyArray(fields);
  const digest = await sha256(encode(body));
  const signature = new Uint8Array(
    await crypto.subtle.sign("Ed25519", privateKey, concat(DOMAIN, digest)));
  return { digest, record: encode([body, signature]) };
}
