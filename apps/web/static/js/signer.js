// The signed-in annotator's key, made ready for signing: found in this browser's IndexedDB,
// or made here and registered with the node (PUT /api/me/key, with a signature proving this
// browser holds it). An account may hold one key per browser; the node only ever sees the
// public halves.
import { api } from "./api.js";
import { generateKey, loadKey, proveKey, saveKey, supported } from "./keys.js";

export class SignerProblem extends Error {}

/** The key to sign with for account `me` ({username, keys, ...}); SignerProblem (a message
 * for the annotator) when this browser cannot sign. */
export async function readySigner(me) {
  if (!supported()) {
    throw new SignerProblem("This browser cannot sign here: open the node over HTTPS (or on localhost) in a current browser.");
  }
  const stored = await loadKey(me.username);
  if (stored && (me.keys || []).includes(stored.publicHex)) return stored;
  const key = stored || await generateKey();
  const proof = await proveKey(key, me.username);
  await api("/api/me/key", { method: "PUT", json: { public_key: key.publicHex, proof } });
  await saveKey(me.username, key);
  return key;
}
