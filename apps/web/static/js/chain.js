// The annotator's chain (seq, prev) as this browser extends it, one record at a time.
//
// Two records at the same seq fork the chain: the platform keeps both as evidence of
// equivocation and leaves the annotator's answers out of the labels. So every tab of this
// browser that signs with the key takes the same Web Lock, and the head that the last
// acknowledged record left (in whichever tab) is shared through localStorage, with the tasks
// answered lately (so a task open in two tabs is not answered twice). After a submission whose
// outcome is unknown (no answer from the node), the node's own head is fetched before the next.
import { fromHex, toHex } from "./bytes.js";

const RECENT_TASKS = 500;

export class AlreadyAnswered extends Error {}

export class Chain {
  /** head: {seq, prev: Uint8Array} from GET /api/tasks; fetchHead: async () => such a head. */
  constructor(publicHex, head, fetchHead) {
    this.storageKey = `phalanx.chain.${publicHex}`;
    this.lockName = `phalanx-chain-${publicHex}`;
    this.head = head;
    this.fetchHead = fetchHead;
    this.unsure = false;
    this.adopt(this.shared());
  }

  shared() {
    try {
      const saved = JSON.parse(localStorage.getItem(this.storageKey));
      return saved && Number.isSafeInteger(saved.seq) ? saved : null;
    } catch {
      return null;
    }
  }

  adopt(saved) {
    if (saved && saved.seq > this.head.seq) this.head = { seq: saved.seq, prev: fromHex(saved.prev) };
  }

  share(taskHex) {
    const saved = this.shared();
    const tasks = saved && saved.seq <= this.head.seq ? saved.tasks || [] : [];
    if (taskHex) tasks.push(taskHex);
    localStorage.setItem(this.storageKey, JSON.stringify({
      seq: this.head.seq, prev: toHex(this.head.prev), tasks: tasks.slice(-RECENT_TASKS),
    }));
  }

  /** Take the node's head as the truth (it counts pending records too). */
  async resync() {
    this.head = await this.fetchHead();
    this.share(null);
  }

  /** Run `submit(head)` (sign a record linked to `head`, post it, return its digest once the
   * node acknowledged it) with the chain to itself, then advance the chain past it.
   * AlreadyAnswered when another tab answered `taskHex` already. */
  async extend(taskHex, submit) {
    const locked = async () => {
      if (this.unsure) {
        await this.resync();
        this.unsure = false;
      }
      const saved = this.shared();
      this.adopt(saved);
      if (saved && (saved.tasks || []).includes(taskHex)) throw new AlreadyAnswered("You answered this task in another tab.");
      let digest;
      try {
        digest = await submit(this.head);
      } catch (error) {
        if (!(error.status >= 400 && error.status < 500)) this.unsure = true; // it may have landed
        throw error;
      }
      this.head = { seq: this.head.seq + 1, prev: digest };
      this.share(taskHex);
      return digest;
    };
    return navigator.locks ? navigator.locks.request(this.lockName, locked) : locked();
  }
}
