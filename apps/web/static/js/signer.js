// The signed-in annotator's key, made ready for signing: found in this browser's IndexedDB,
// or made here, and registered with the node as the account's current key (PUT /api/me/key,
// with a signature proving this browser holds it). An account holds one key per browser it
// annotates from; the node only ever sees their public halves.
import { api } from "./api.js";
import { generateKey, loadKey, proveKey, saveKey, supported } from "./keys.js";

export class SignerProblem extends Error {}

/** The key to sign with for account `me` ({username, public_key, ...}); SignerProblem (a
 * message for the annotator) when this browser cannot sign. */
export async function readySigner(me) {
  if (!supported()) {
    throw new SignerProblem("This browser cannot sign here: open the node over HTTPS (or on localhost) in a current browser.");
  }
  const stored = await loadKey(me.username);
  if (stored && stored.publicHex === me.public_key) return stored;
  // a new browser, or one whose key another browser replaced as current: (re)register it
  const key = stored || await generateKey();
  const proof = await proveKey(key, me.username);
  const updated = await api("/api/me/key", { method: "PUT", json: { public_key: key.publicHex, proof } });
  if (!stored) await saveKey(me.username, key);
  Object.assign(me, { public_key: key.publicHex, keys: updated.keys });
  return key;
}
