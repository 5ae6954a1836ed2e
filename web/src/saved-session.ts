import type { SavedSession } from './connection.js';

/** The part of the Web Storage API used here (sessionStorage, localStorage). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** This tab's session: a reload comes back as it. */
const TAB_KEY = 'confab.session';
/** The session of the tab that closed last: the next tab opened without one comes back as it. */
const CLOSED_KEY = 'confab.closed';

/**
 * Where the web app keeps the session it comes back as (README, "Web client"). Each tab
 * keeps its own in sessionStorage, so two tabs are two users and never take each other's
 * session over. A tab that closes (or navigates away) hands its session to localStorage,
 * and the next tab opened without one of its own takes it from there, once: reopening the
 * page comes back under the same nickname, in the same rooms, with the same token (its
 * cids still recognised). Leaving forgets it. Storage that is disabled or full only
 * means asking for a nickname again.
 */
export class SavedSessions {
  constructor(
    private readonly tab: KeyValueStore | undefined,
    private readonly shared: KeyValueStore | undefined,
  ) {}

  /** The session to come back as on load: this tab's own (a reload), else a closed tab's. */
  load(): SavedSession | undefined {
    const own = read(this.tab, TAB_KEY);
    const closed = read(this.shared, CLOSED_KEY);
    if (own !== undefined) {
      // This tab's own hand-over as it reloaded: not for another tab to take.
      if (closed !== undefined && closed.text === own.text) remove(this.shared, CLOSED_KEY);
      return own.session;
    }
    if (closed === undefined) return undefined;
    remove(this.shared, CLOSED_KEY);
    write(this.tab, TAB_KEY, closed.text);
    return closed.session;
  }

  /** Keeps what a reload needs; undefined once the user left. */
  save(session: SavedSession | undefined): void {
    if (session === undefined) remove(this.tab, TAB_KEY);
    else write(this.tab, TAB_KEY, JSON.stringify(session));
  }

  /** The page is going away (`pagehide`): a tab opened later may take its session. */
  hide(): void {
    const own = read(this.tab, TAB_KEY);
    if (own !== undefined) write(this.shared, CLOSED_KEY, own.text);
  }

  /** The page came back from the back-forward cache (`pageshow`): its session is its own again. */
  show(): void {
    const own = read(this.tab, TAB_KEY);
    const closed = read(this.shared, CLOSED_KEY);
    if (own !== undefined && closed?.text === own.text) remove(this.shared, CLOSED_KEY);
  }
}

/** A saved session, checked field by field: storage is the user's to edit. */
function read(
  store: KeyValueStore | undefined,
  key: string,
): { text: string; session: SavedSession } | undefined {
  let text: string | null;
  let value: unknown;
  try {
    text = store?.getItem(key) ?? null;
    if (text === null) return undefined;
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const saved = value as Record<string, unknown>;
  if (typeof saved.nickname !== 'string' || saved.nickname === '') return undefined;
  const rooms = Array.isArray(saved.rooms)
    ? saved.rooms.filter((r): r is string => typeof r === 'string')
    : [];
  const resume = typeof saved.resume === 'string' ? saved.resume : undefined;
  return { text, session: { nickname: saved.nickname, resume, rooms } };
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
