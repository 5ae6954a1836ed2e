/** What a page needs to come back as the same user: who, in which rooms, with which token. */
export interface SavedSession {
  nickname: string;
  resume: string | undefined;
  rooms: string[];
}

/** The part of the Web Storage API used here (sessionStorage, localStorage). */
export interface KeyValueStore {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The part of BroadcastChannel used here: how the page asks its other tabs. */
export interface TabChannel {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
}

/**
 * The part of the Web Locks API used here, which a browser gives pages of a secure context
 * (HTTPS, or loopback): a lock that one page of the profile holds at a time, let go when
 * that page lets it go or is gone (closed, crashed).
 */
export interface TabLocks {
  /**
   * Takes lock `name`, waiting at most `waitMs` for the page holding it (none: only if it is
   * free): the function that lets it go, or undefined when it was not had.
   */
  take(name: string, waitMs: number): Promise<(() => void) | undefined>;
}

/** How the page was arrived at (the Navigation Timing entry's `type`). */
export type Arrival = 'navigate' | 'reload' | 'back_forward' | 'prerender';

/** What `load` found: a session to come back as, or that this tab's is open in another. */
export interface Loaded {
  session?: SavedSession;
  elsewhere?: true;
}

/** The longest nickname the server takes, in characters (docs/protocol.md, "Nicknames"). */
export const MAX_NICKNAME = 32;

/** This tab's session (with its id): a reload comes back as it. */
const TAB_KEY = 'confab.session';
/**
 * Set in its tab's sessionStorage while a page runs, removed as it goes away: a page that
 * finds it set is a copy of a live tab's storage (a duplicated tab), or follows a page that
 * went without `pagehide` (it crashed, or the browser discarded it).
 */
const LIVE_KEY = 'confab.live';
/** A tab that went away, one key each (so that tabs closing at once lose none): its session. */
const CLOSED_PREFIX = 'confab.closed.';
/** Closed tabs whose sessions are kept for new tabs; the oldest go first. */
const MAX_CLOSED = 5;
/** How long a tab waits for another to say it holds, or is taking, a session. */
const ASK_MS = 200;
/** A session's lock (TabLocks), held by the page that holds the session. */
const LOCK_PREFIX = 'confab.session.';
/**
 * How long a page waits for the lock of a session handed over to be let go: by the page that
 * handed it over (a reload), whose going may still be under way as this one loads.
 */
const HANDED_WAIT_MS = 2000;

interface Kept {
  id: string;
  session: SavedSession;
}

interface Closed extends Kept {
  /** When its tab went away (Date.now()). */
  at: number;
}

/**
 * Where the web app keeps the session it comes back as (README, "Web client"). Each session
 * has an id, and lives in one tab at a time: the tab keeps it in sessionStorage, so a reload
 * comes back as it, and answers its other tabs (a BroadcastChannel) that it holds it. A tab
 * that goes away (`pagehide`, as it closes, reloads or navigates away) hands its session to
 * localStorage; a tab opened afresh, without a session of its own, takes the newest one that
 * no live tab holds or is taking, once: reopening the page comes back under the same
 * nickname, in the same rooms, with the same token (its cids still recognised). A copy of a
 * live tab's storage (a duplicated tab), or a tab whose session another tab took while it was
 * away, starts without one. Leaving, or a server that ends the session, forgets it. Storage
 * that is disabled or full only means asking for a nickname again.
 *
 * Which tab holds a session is a lock (TabLocks) where the browser has them: one tab takes a
 * session however many open at once, and a tab reloaded after its page crashed takes its
 * own back. Where it has none (a page served over plain HTTP to another machine), tabs ask
 * each other over the channel instead, which holds while they answer within ASK_MS, and a
 * crashed page's tab cannot be told from a duplicated one.
 */
export class SavedSessions {
  /** The session this page holds, while it holds one. */
  private id: string | undefined;
  private gone = false;
  /** Sessions this page is asking about, with the number it asks under (lower wins). */
  private readonly asking = new Map<string, { by: number; answered: () => void }>();
  /** The lock of the session this page holds, with TabLocks. */
  private held: { id: string; release: () => void } | undefined;
  /** The last lock asked for, taken in turn after those before it. */
  private holding: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly tab: KeyValueStore | undefined,
    private readonly shared: KeyValueStore | undefined,
    private readonly channel: TabChannel | undefined,
    private readonly newId: () => string,
    private readonly locks?: TabLocks,
  ) {
    channel?.addEventListener('message', ({ data }) => {
      if (typeof data !== 'object' || data === null) return;
      const { ask, by, have, to } = data as Record<string, unknown>;
      if (typeof ask === 'string' && typeof by === 'number') {
        // Held here, or being taken here under a lower number: an answer to that asker
        // alone (every tab hears it), so that the lowest of several askers hears none.
        const mine = this.asking.get(ask);
        if ((ask === this.id && !this.gone) || (mine !== undefined && mine.by < by))
          channel.postMessage({ have: ask, to: by });
        // Asking under a higher number: that asker's answer may come too late to be heard.
        else if (mine !== undefined && mine.by > by) mine.answered();
      }
      if (typeof have === 'string') {
        // Addressed to this page's question, or to everyone (a tab that just took it).
        const mine = this.asking.get(have);
        if (mine !== undefined && (to === undefined || to === mine.by)) mine.answered();
      }
    });
  }

  /**
   * The session to come back as on load, if any; `discarded` when the browser had discarded
   * the page to save memory (`document.wasDiscarded`), so that it went without `pagehide`.
   */
  async load(arrival: Arrival, discarded = false): Promise<Loaded> {
    const before = read(this.tab, LIVE_KEY);
    write(this.tab, LIVE_KEY, '1');
    const own = readKept(read(this.tab, TAB_KEY), this.newId);
    if (own !== undefined) {
      const handed = this.waiting(own.id);
      // Held by a live page: the one this tab was copied from, or one that took the session
      // while this tab was away. Else it is this tab's: handed over as its page went (a
      // reload, a step back), or not (it crashed, or was discarded to save memory).
      // Without locks, a copy of a running page's storage (or one that crashed: no telling
      // them apart without asking it, and a busy live page that did not answer in time
      // would have its session taken over) is nobody; else the session is free unless
      // another tab took it meanwhile.
      // With locks, a page before it that went by `pagehide` (the tab's flag cleared, or the
      // session handed over) may still hold the lock a moment: waited for.
      const ours =
        this.locks !== undefined
          ? await this.hold(own.id, handed || before === undefined ? HANDED_WAIT_MS : 0)
          : !(before !== undefined && !discarded) && (handed || (await this.free(own.id)));
      if (!ours) {
        remove(this.tab, TAB_KEY);
        return { elsewhere: true };
      }
      this.take(own);
      return { session: own.session };
    }
    // A reload or a step through history is the same tab, which had left: not a new one.
    if (arrival !== 'navigate') return {};
    for (const candidate of this.closed()) {
      if (!(await this.claim(candidate.id))) continue;
      // Taken meanwhile by a tab that asked, or held it, before this one.
      if (!this.waiting(candidate.id)) {
        this.letGo();
        continue;
      }
      this.take(candidate);
      return { session: candidate.session };
    }
    return {};
  }

  /** Keeps what a reload needs; undefined once the session ended. */
  save(session: SavedSession | undefined): void {
    if (session === undefined) {
      this.id = undefined;
      this.letGo();
      remove(this.tab, TAB_KEY);
      return;
    }
    if (this.id === undefined) {
      const id = this.newId();
      this.id = id;
      // A new id, which no other page holds: held for a copy of this tab to find held.
      if (this.locks !== undefined)
        void this.hold(id, 0).then((had) => {
          if (had && (this.id !== id || this.gone)) this.letGo();
        });
    }
    write(this.tab, TAB_KEY, JSON.stringify(flat({ id: this.id, session })));
  }

  /** The page is going away (`pagehide`): a tab opened later may take its session. */
  hide(): void {
    this.gone = true;
    remove(this.tab, LIVE_KEY);
    const own = readKept(read(this.tab, TAB_KEY));
    if (own !== undefined) {
      write(this.shared, CLOSED_PREFIX + own.id, JSON.stringify({ ...flat(own), at: Date.now() }));
      for (const old of this.closed().slice(MAX_CLOSED))
        remove(this.shared, CLOSED_PREFIX + old.id);
    }
    // After the handing over: a tab that then takes the lock finds the session waiting.
    this.letGo();
  }

  /**
   * The page came back from the back-forward cache (`pageshow`): false when another tab took
   * its session meanwhile, which the page then gives up.
   */
  async show(): Promise<boolean> {
    this.gone = false;
    write(this.tab, LIVE_KEY, '1');
    const id = this.id;
    if (id === undefined) return true;
    if (
      this.locks !== undefined ? await this.hold(id, 0) : this.waiting(id) || (await this.free(id))
    ) {
      remove(this.shared, CLOSED_PREFIX + id);
      return true;
    }
    this.save(undefined);
    return false;
  }

  private take(kept: Kept): void {
    this.id = kept.id;
    // A tab that asked while this one did, and has yet to hear, gives it up.
    this.channel?.postMessage({ have: kept.id });
    remove(this.shared, CLOSED_PREFIX + kept.id);
    write(this.tab, TAB_KEY, JSON.stringify(flat(kept)));
  }

  /** Whether session `id` is this page's to take: its lock had, or (without locks) free. */
  private claim(id: string): Promise<boolean> {
    return this.locks !== undefined ? this.hold(id, 0) : this.free(id);
  }

  /**
   * Takes session `id`'s lock, letting go of the one held before; false if not had. One at a
   * time, and true at once for the lock held: a page asking again for a lock it holds would
   * be told it is held (locks are not re-entrant).
   */
  private hold(id: string, waitMs: number): Promise<boolean> {
    const held = this.holding.then(async () => {
      if (this.held?.id === id) return true;
      const release = await this.locks?.take(LOCK_PREFIX + id, waitMs);
      if (release === undefined) return false;
      this.letGo();
      this.held = { id, release };
      return true;
    });
    // A lock that could not be asked for (the browser refused) is not had, and the next
    // one is asked for all the same.
    const settled = held.catch(() => false);
    this.holding = settled;
    return settled;
  }

  private letGo(): void {
    const held = this.held;
    this.held = undefined;
    held?.release();
  }

  /**
   * Whether session `id` is free to take: no live tab says it holds it, or is taking it
   * having asked under a lower number, within ASK_MS.
   */
  private free(id: string): Promise<boolean> {
    const channel = this.channel;
    if (channel === undefined) return Promise.resolve(true);
    return new Promise((resolve) => {
      const by = Math.random();
      const finish = (free: boolean) => {
        clearTimeout(timer);
        this.asking.delete(id);
        resolve(free);
      };
      const timer = setTimeout(() => finish(true), ASK_MS);
      this.asking.set(id, { by, answered: () => finish(false) });
      channel.postMessage({ ask: id, by });
    });
  }

  /** Whether session `id` waits, handed over, for a tab to take it. */
  private waiting(id: string): boolean {
    return closedAt(this.shared, CLOSED_PREFIX + id) !== undefined;
  }

  /** The handed-over sessions, newest first; an entry that is not one is removed. */
  private closed(): Closed[] {
    const store = this.shared;
    const found: Closed[] = [];
    const broken: string[] = [];
    try {
      for (let i = 0; store !== undefined && i < store.length; i++) {
        const key = store.key(i);
        if (key === null || !key.startsWith(CLOSED_PREFIX)) continue;
        const closed = closedAt(store, key);
        if (closed === undefined) broken.push(key);
        else found.push(closed);
      }
    } catch {
      return [];
    }
    for (const key of broken) remove(store, key);
    return found.sort((a, b) => b.at - a.at);
  }
}

/** The handed-over session stored under `key`, if that is one (and its key is its id's). */
function closedAt(store: KeyValueStore | undefined, key: string): Closed | undefined {
  const text = read(store, key);
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const kept = readKept(value);
  if (kept === undefined || key !== CLOSED_PREFIX + kept.id) return undefined;
  const at = (value as { at?: unknown }).at;
  return typeof at === 'number' && Number.isFinite(at) ? { ...kept, at } : undefined;
}

/** How a session is stored: its id beside the fields of SavedSession. */
function flat(kept: Kept): Record<string, unknown> {
  return { id: kept.id, ...kept.session };
}

/**
 * A kept session, checked field by field (storage is the user's to edit), from its text or
 * parsed; `newId` names one stored without an id (by an earlier version), else it is none.
 */
function readKept(value: unknown, newId?: () => string): Kept | undefined {
  if (typeof value === 'string') {
    try {
      return readKept(JSON.parse(value), newId);
    } catch {
      return undefined;
    }
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const saved = value as Record<string, unknown>;
  const id = typeof saved.id === 'string' && saved.id !== '' ? saved.id : newId?.();
  if (id === undefined) return undefined;
  // A nickname no server takes (edited by hand) would come back refused every time.
  const nickname = saved.nickname;
  if (typeof nickname !== 'string' || !/^\S+$/u.test(nickname)) return undefined;
  if ([...nickname].length > MAX_NICKNAME) return undefined;
  const rooms = Array.isArray(saved.rooms)
    ? saved.rooms.filter((r): r is string => typeof r === 'string')
    : [];
  const resume = typeof saved.resume === 'string' ? saved.resume : undefined;
  return { id, session: { nickname, resume, rooms } };
}

function read(store: KeyValueStore | undefined, key: string): string | undefined {
  try {
    return store?.getItem(key) ?? undefined;
  } catch {
    return undefined;
  }
}

function write(store: KeyValueStore | undefined, key: string, text: string): void {
  try {
    store?.setItem(key, text);
  } catch {
    // Full or disabled: there is nothing to come back as.
  }
}

function remove(store: KeyValueStore | undefined, key: string): void {
  try {
    store?.removeItem(key);
  } catch {
    // Disabled: nothing was kept either.
  }
}
