// The annotator's signing key: an Ed25519 pair made by WebCrypto with a non-extractable private
// half, kept in this browser's IndexedDB under the account name (IndexedDB is per origin, so
// per node). The node only ever sees the public key.
import { toHex } from "./bytes.js";

const DB = "phalanx-annotator";
const STORE = "keys";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "account" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, act) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = act(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export function supported() {
  return Boolean(window.isSecureContext && crypto.subtle && window.indexedDB);
}

/** A fresh key pair (not yet stored): {privateKey, publicKey, publicHex}. */
export async function generateKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: raw, publicHex: toHex(raw) };
}

export async function saveKey(account, key) {
  await transact("readwrite", (store) => store.put({
    account, privateKey: key.privateKey, publicKey: key.publicKey, created: Date.now(),
  }));
}

/** The stored key of `account`, or null. */
export async function loadKey(account) {
  const row = await transact("readonly", (store) => store.get(account));
  if (!row) return null;
  return { privateKey: row.privateKey, publicKey: row.publicKey, publicHex: toHex(row.publicKey) };
}

const KEY_DOMAIN = new TextEncoder().encode("phalanx/key/v1");

/** Hex of the signature that proves `username` holds `key`: Ed25519 over
 * "phalanx/key/v1" + the username in UTF-8, what the node asks with a key registration. */
export async function proveKey(key, username) {
  const name = new TextEncoder().encode(username);
  const message = new Uint8Array(KEY_DOMAIN.length + name.length);
  message.set(KEY_DOMAIN);
  message.set(name, KEY_DOMAIN.length);
  return toHex(new Uint8Array(await crypto.subtle.sign("Ed25519", key.privateKey, message)));
}
