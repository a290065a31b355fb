// The signed-in annotator's key, made ready for signing: found in this browser, or made and
// registered with the node (PUT /api/me/key). A key registered from another browser is not
// replaced silently, since the key is the annotator's identity on every node.
import { api } from "./api.js";
import { generateKey, loadKey, saveKey, supported } from "./keys.js";

export class SignerProblem extends Error {}

/** The key to sign with for account `me`; SignerProblem (a message for the annotator) when
 * this browser cannot sign for the account. */
export async function readySigner(me) {
  if (!supported()) {
    throw new SignerProblem("This browser cannot sign here: open the node over HTTPS (or on localhost) in a current browser.");
  }
  let key = await loadKey(me.username);
  if (key && key.publicHex === me.public_key) return key;
  if (key && me.public_key) {
    throw new SignerProblem("Your account's signing key lives in another browser. Sign in there, or ask an admin to reset your key.");
  }
  if (!key) {
    if (me.public_key) {
      throw new SignerProblem("Your account's signing key lives in another browser. Sign in there, or ask an admin to reset your key.");
    }
    key = await generateKey();
  }
  await api("/api/me/key", { method: "PUT", json: { public_key: key.publicHex } });
  await saveKey(me.username, key);
  me.public_key = key.publicHex;
  return key;
}
