// The profile at rest: IndexedDB holds a non-extractable AES-GCM key (a
// WebCrypto CryptoKey, stored as itself: the page can use it, never read
// it) and, encrypted under it, the profile bytes ("profile") and the key
// records logouts kept ("record:<user>": that account's identity key under
// its password; "last" names the latest). "leaving" marks a logout under
// way, so that a reload finishes it. Nothing goes to localStorage.
// resetTo() replaces everything, in one transaction, with the key records
// re-encrypted under a new wrapping key: a reload or a crash at any moment
// leaves either the old state or the new one.

const DB = "confab";
const STORE = "kv";

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function open() {
  const r = indexedDB.open(DB, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(STORE);
  return request(r);
}

async function get(db, key) {
  return request(db.transaction(STORE, "readonly").objectStore(STORE).get(key));
}

async function put(db, key, value) {
  const tx = db.transaction(STORE, "readwrite");
  tx.objectStore(STORE).put(value, key);
  // Resolved once the write is committed (the durability the core waits for).
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export class ProfileStore {
  constructor(db, key) {
    this.db = db;
    this.key = key;
  }

  static async open() {
    const db = await open();
    let key = await get(db, "wrap-key");
    if (!key) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await put(db, "wrap-key", key);
    }
    return new ProfileStore(db, key);
  }

  async load(name = "profile") {
    const rec = await get(this.db, name);
    if (!rec) return undefined;
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: rec.iv }, this.key, rec.data);
    return new Uint8Array(plain);
  }

  async save(bytes, name = "profile") {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, this.key, bytes);
    bytes.fill(0);
    await put(this.db, name, { iv, data });
  }

  // The key records, as a Map from account to bytes.
  async records() {
    const keys = await request(this.db.transaction(STORE, "readonly").objectStore(STORE).getAllKeys());
    const out = new Map();
    for (const k of keys) {
      if (typeof k === "string" && k.startsWith("record:")) out.set(k.slice(7), await this.load(k));
    }
    return out;
  }

  async saveRecord(owner, bytes) {
    return this.save(bytes, `record:${owner}`);
  }

  async last() {
    return get(this.db, "last");
  }

  // Everything replaced by `records` (Map account -> bytes) under a new
  // wrapping key, `last` naming the account just logged out; one transaction.
  async resetTo(records, last) {
    const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    const sealed = [];
    for (const [owner, bytes] of records) {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      sealed.push([`record:${owner}`, { iv, data: await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, bytes) }]);
      bytes.fill(0);
    }
    const tx = this.db.transaction(STORE, "readwrite");
    const kv = tx.objectStore(STORE);
    kv.clear();
    kv.put(key, "wrap-key");
    for (const [name, value] of sealed) kv.put(value, name);
    if (last !== undefined) kv.put(last, "last");
    await new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    this.key = key;
  }

  async markLeaving() {
    await put(this.db, "leaving", true);
  }

  async leaving() {
    return (await get(this.db, "leaving")) === true;
  }


}
