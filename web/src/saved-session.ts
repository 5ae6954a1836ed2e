import type { SavedSession } from './connection.js';

/** The part of the Web Storage API used here (sessionStorage, localStorage). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The part of BroadcastChannel used here: how the page asks its other tabs. */
export interface TabChannel {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
}

/** How the page was arrived at (the Navigation Timing entry's `type`). */
export type Arrival = 'navigate' | 'reload' | 'back_forward' | 'prerender';

/** What `load` found: a session to come back as, or that this tab's is open in another. */
export interface Loaded {
  session?: SavedSession;
  elsewhere?: true;
}

/** This tab's session (with its id): a reload comes back as it. */
const TAB_KEY = 'confab.session';
/** Sessions of tabs that went away, newest first: a new tab comes back as the newest. */
const CLOSED_KEY = 'confab.closed';
/** Closed tabs whose sessions are kept for new tabs; the oldest go first. */
const MAX_CLOSED = 5;
/** How long a tab waits for another to say it holds a session. */
const ASK_MS = 200;

interface Kept {
  id: string;
  session: SavedSession;
}

/**
 * Where the web app keeps the session it comes back as (README, "Web client"). Each session
 * has an id, and lives in one tab at a time: the tab keeps it in sessionStorage, so a reload
 * comes back as it, and answers its other tabs (a BroadcastChannel) that it holds it. A tab
 * that goes away (`pagehide`, as it closes, reloads or navigates away) hands its session to
 * localStorage; a tab opened afresh, without a session of its own, takes the newest one that
 * no live tab holds, once: reopening the page comes back under the same nickname, in the same
 * rooms, with the same token (its cids still recognised). A tab whose sessionStorage holds a
 * session that another tab holds (a duplicated tab, or one restored after a new tab took its
 * session) starts without it. Leaving, or a server that ends the session, forgets it.
 * Storage that is disabled or full only means asking for a nickname again.
 */
export class SavedSessions {
  /** The session this page holds, while it holds one. */
  private id: string | undefined;
  private gone = false;
  private readonly answers = new Set<(id: string) => void>();

  constructor(
    private readonly tab: KeyValueStore | undefined,
    private readonly shared: KeyValueStore | undefined,
    private readonly channel: TabChannel | undefined,
    private readonly newId: () => string,
  ) {
    channel?.addEventListener('message', ({ data }) => {
      if (typeof data !== 'object' || data === null) return;
      const { ask, have } = data as { ask?: unknown; have?: unknown };
      if (typeof ask === 'string' && ask === this.id && !this.gone)
        channel.postMessage({ have: ask });
      if (typeof have === 'string') for (const answer of this.answers) answer(have);
    });
  }

  /** The session to come back as on load, if any. */
  async load(arrival: Arrival): Promise<Loaded> {
    const own = readKept(read(this.tab, TAB_KEY), this.newId);
    if (own !== undefined) {
      const closed = this.closed();
      // In the list: this tab's own hand-over as it reloaded (or went back and forth).
      // Not there: a copy of a live tab's, unless no tab answers for it.
      if (!closed.some((c) => c.id === own.id) && (await this.held(own.id))) {
        remove(this.tab, TAB_KEY);
        return { elsewhere: true };
      }
      this.take(own);
      write(this.tab, TAB_KEY, JSON.stringify(flat(own)));
      return { session: own.session };
    }
    // A reload or a step through history is the same tab, which had left: not a new one.
    if (arrival !== 'navigate') return {};
    for (const candidate of this.closed()) {
      if (await this.held(candidate.id)) {
        this.drop(candidate.id);
        continue;
      }
      // Another new tab may have taken it while this one asked.
      if (!this.closed().some((c) => c.id === candidate.id)) continue;
      this.take(candidate);
      write(this.tab, TAB_KEY, JSON.stringify(flat(candidate)));
      return { session: candidate.session };
    }
    return {};
  }

  /** Keeps what a reload needs; undefined once the session ended. */
  save(session: SavedSession | undefined): void {
    if (session === undefined) {
      this.id = undefined;
      remove(this.tab, TAB_KEY);
      return;
    }
    this.id ??= this.newId();
    write(this.tab, TAB_KEY, JSON.stringify(flat({ id: this.id, session })));
  }

  /** The page is going away (`pagehide`): a tab opened later may take its session. */
  hide(): void {
    this.gone = true;
    const own = readKept(read(this.tab, TAB_KEY));
    if (own === undefined) return;
    const rest = this.closed().filter((c) => c.id !== own.id);
    write(this.shared, CLOSED_KEY, JSON.stringify([own, ...rest].slice(0, MAX_CLOSED).map(flat)));
  }

  /**
   * The page came back from the back-forward cache (`pageshow`): false when another tab took
   * its session meanwhile, which the page then gives up.
   */
  async show(): Promise<boolean> {
    this.gone = false;
    const id = this.id;
    if (id === undefined) return true;
    if (this.closed().some((c) => c.id === id)) {
      this.drop(id);
      return true;
    }
    if (!(await this.held(id))) return true;
    this.save(undefined);
    return false;
  }

  private take(kept: Kept): void {
    this.id = kept.id;
    this.drop(kept.id);
  }

  /** Whether a live tab says it holds session `id`. */
  private held(id: string): Promise<boolean> {
    const channel = this.channel;
    if (channel === undefined) return Promise.resolve(false);
    return new Promise((resolve) => {
      const answer = (have: string) => {
        if (have !== id) return;
        finish(true);
      };
      const timer = setTimeout(() => finish(false), ASK_MS);
      const finish = (yes: boolean) => {
        clearTimeout(timer);
        this.answers.delete(answer);
        resolve(yes);
      };
      this.answers.add(answer);
      channel.postMessage({ ask: id });
    });
  }

  /** The handed-over sessions, newest first; what is not one is left out (and rewritten). */
  private closed(): Kept[] {
    const text = read(this.shared, CLOSED_KEY);
    if (text === undefined) return [];
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    const list = Array.isArray(value)
      ? value.map((v) => readKept(v)).filter((k): k is Kept => k !== undefined)
      : [];
    if (list.length === 0) remove(this.shared, CLOSED_KEY);
    return list;
  }

  private drop(id: string): void {
    const rest = this.closed().filter((c) => c.id !== id);
    if (rest.length === 0) remove(this.shared, CLOSED_KEY);
    else write(this.shared, CLOSED_KEY, JSON.stringify(rest.map(flat)));
  }
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
  if (typeof saved.nickname !== 'string' || saved.nickname === '') return undefined;
  const rooms = Array.isArray(saved.rooms)
    ? saved.rooms.filter((r): r is string => typeof r === 'string')
    : [];
  const resume = typeof saved.resume === 'string' ? saved.resume : undefined;
  return { id, session: { nickname: saved.nickname, resume, rooms } };
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
