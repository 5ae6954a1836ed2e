import { BroadcastChannel } from 'node:worker_threads';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type KeyValueStore,
  MAX_NICKNAME,
  type SavedSession,
  SavedSessions,
  type TabChannel,
  type TabLocks,
} from '../../web/src/saved-session.js';

/** Web Storage as a browser keeps it: string values, keys in insertion order. */
class MemoryStore implements KeyValueStore {
  private readonly items = new Map<string, string>();

  get length(): number {
    return this.items.size;
  }
  key(index: number): string | null {
    return [...this.items.keys()][index] ?? null;
  }
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
  /** What a duplicated tab starts with: a copy of its original's sessionStorage. */
  copy(): MemoryStore {
    const copy = new MemoryStore();
    for (const [key, value] of this.items) copy.setItem(key, value);
    return copy;
  }
  keys(): string[] {
    return [...this.items.keys()];
  }
}

/** Storage a browser disabled: every call throws. */
const broken: KeyValueStore = {
  get length(): number {
    throw new Error('disabled');
  },
  key: () => {
    throw new Error('disabled');
  },
  getItem: () => {
    throw new Error('disabled');
  },
  setItem: () => {
    throw new Error('disabled');
  },
  removeItem: () => {
    throw new Error('disabled');
  },
};

/**
 * Web Locks as a browser keeps them for one profile: a lock held by one page at a time,
 * granted in a later task (as the browser's answer comes), and let go with its page.
 */
class MemoryLocks {
  private readonly holders = new Map<string, number>();
  private readonly waiting = new Map<string, (() => void)[]>();

  /** What page `page` sees as `navigator.locks`. */
  forPage(page: number): TabLocks {
    return {
      take: async (name, waitMs) => {
        const until = Date.now() + waitMs;
        for (;;) {
          await new Promise((resolve) => setTimeout(resolve, 1));
          if (!this.holders.has(name)) {
            this.holders.set(name, page);
            return () => this.release(name, page);
          }
          const left = until - Date.now();
          if (left <= 0) return undefined;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, left);
            const wake = () => {
              clearTimeout(timer);
              resolve();
            };
            this.waiting.set(name, [...(this.waiting.get(name) ?? []), wake]);
          });
        }
      },
    };
  }

  /** Page `page` is gone (closed, crashed): its locks with it. */
  drop(page: number): void {
    for (const [name, holder] of [...this.holders]) if (holder === page) this.release(name, page);
  }

  holder(name: string): number | undefined {
    return this.holders.get(name);
  }

  /** The locks page `page` holds. */
  heldBy(page: number): string[] {
    return [...this.holders].filter(([, holder]) => holder === page).map(([name]) => name);
  }

  private release(name: string, page: number): void {
    if (this.holders.get(name) !== page) return;
    this.holders.delete(name);
    const woken = this.waiting.get(name) ?? [];
    this.waiting.delete(name);
    for (const wake of woken) wake();
  }
}

/**
 * localStorage as a browser with a process per tab keeps it: each page reads a copy of its
 * own, which another page's writes reach `lagMs` later.
 */
class LaggingStorage {
  readonly master = new MemoryStore();
  private readonly views = new Set<MemoryStore>();

  constructor(private readonly lagMs: number) {}

  view(): KeyValueStore {
    const own = this.master.copy();
    this.views.add(own);
    const write = (apply: (store: MemoryStore) => void) => {
      apply(own);
      setTimeout(() => {
        apply(this.master);
        for (const view of this.views) if (view !== own) apply(view);
      }, this.lagMs);
    };
    return {
      get length() {
        return own.length;
      },
      key: (index) => own.key(index),
      getItem: (key) => own.getItem(key),
      setItem: (key, value) => write((store) => store.setItem(key, value)),
      removeItem: (key) => write((store) => store.removeItem(key)),
    };
  }
}

interface Page {
  /** Its tab's sessionStorage. */
  tab: MemoryStore;
  saved: SavedSessions;
  /** The page is gone: its channel with it. */
  close(): void;
  /** The locks it holds (none without locks). */
  held(): string[];
}

const channels: BroadcastChannel[] = [];
afterEach(() => {
  for (const channel of channels.splice(0)) channel.close();
  vi.useRealTimers();
});

let browsers = 0;
/** Whether the browser profiles made below give their pages Web Locks (a secure context). */
let withLocks = false;
/**
 * One browser profile: localStorage shared by its pages, which talk over a real
 * BroadcastChannel (Node's, delivered between instances as a browser delivers between tabs),
 * and take locks of one MemoryLocks when `withLocks`; localStorage reaches the other pages
 * `lagMs` after a write when that is given.
 */
function browser(lagMs = 0) {
  const lagging = lagMs > 0 ? new LaggingStorage(lagMs) : undefined;
  const shared = lagging?.master ?? new MemoryStore();
  const name = `confab.sessions.test.${++browsers}`;
  const locks = withLocks ? new MemoryLocks() : undefined;
  let ids = 0;
  let pages = 0;
  const open = (tab = new MemoryStore()): Page => {
    const page = ++pages;
    const channel = new BroadcastChannel(name);
    channels.push(channel);
    // Node's channel types its listener's event as a plain Event; the data is there.
    const tabChannel: TabChannel = {
      postMessage: (message) => channel.postMessage(message),
      addEventListener: (type, listener) =>
        channel.addEventListener(type, (event) => listener(event as MessageEvent)),
    };
    const saved = new SavedSessions(
      tab,
      lagging?.view() ?? shared,
      tabChannel,
      () => `id${++ids}`,
      locks?.forPage(page),
    );
    return {
      tab,
      saved,
      close: () => {
        channel.close();
        locks?.drop(page);
      },
      held: () => locks?.heldBy(page) ?? [],
    };
  };
  const closedKeys = () => shared.keys().filter((k) => k.startsWith('confab.closed.'));
  return { shared, open, closedKeys, locks };
}

/** Waits (bounded) for `done`, checked every few milliseconds. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(done()).toBe(true);
}

const session = (nickname: string, rooms = ['lobby']): SavedSession => ({
  nickname,
  resume: `token-of-${nickname}`,
  rooms,
});

/** A page that joined as `nickname` (a fresh tab, nothing to come back as). */
async function chatting(open: () => Page, nickname: string): Promise<Page> {
  const page = open();
  expect(await page.saved.load('navigate')).toEqual({});
  page.saved.save(session(nickname));
  // With locks, it holds its new session's once the browser answers.
  if (withLocks) await until(() => page.held().length === 1);
  return page;
}

/** With locks, a page holds one lock if it took a session, else none. */
function expectHeldAsTaken(pages: Page[], loaded: { session?: SavedSession }[]): void {
  if (!withLocks) return;
  for (const [i, page] of pages.entries())
    expect(page.held()).toHaveLength(loaded[i]!.session === undefined ? 0 : 1);
}

/** The user closes the page's tab (or it reloads, or navigates away). */
function away(page: Page): void {
  page.saved.hide();
  // Let go as it went, not only with the page: a tab opening meanwhile may take it.
  expect(page.held()).toEqual([]);
  page.close();
}

describe.each([
  ['tabs asking each other over a BroadcastChannel', false],
  ['Web Locks', true],
])('SavedSessions (the web app: which tab comes back as whom), %s', (_, locks) => {
  beforeEach(() => {
    withLocks = locks;
  });

  it("gives a closed tab's session to one new tab, once", async () => {
    const { open, closedKeys } = browser();
    const first = await chatting(open, 'ann');
    // Held by a live tab: a second tab has nothing to take.
    expect(await open().saved.load('navigate')).toEqual({});
    away(first);
    expect(closedKeys()).toHaveLength(1);
    const reopened = open();
    expect(await reopened.saved.load('navigate')).toEqual({ session: session('ann') });
    expect(closedKeys()).toEqual([]);
    expect(await open().saved.load('navigate')).toEqual({});
    // Held now by the reopened tab, whose own reload brings it back.
    away(reopened);
    const reloaded = open(reopened.tab);
    expect(await reloaded.saved.load('reload')).toEqual({ session: session('ann') });
  });

  it("a reload takes its own session back and never another's", async () => {
    const { open, closedKeys } = browser();
    const a = await chatting(open, 'ann');
    const b = await chatting(open, 'bob');
    away(a);
    away(b);
    // bob's is the newer, and a new tab would take it; a's reload takes ann's.
    expect(await open(a.tab).saved.load('reload')).toEqual({ session: session('ann') });
    expect(closedKeys()).toEqual(['confab.closed.id2']);
    // A tab that left (\exit) and reloads is nobody, though bob's session waits.
    const left = open();
    expect(await left.saved.load('navigate')).toEqual({ session: session('bob') });
    left.saved.save(undefined);
    expect(left.held()).toEqual([]);
    away(left);
    expect(await open(left.tab).saved.load('reload')).toEqual({});
    expect(await open(left.tab).saved.load('back_forward')).toEqual({});
  });

  it('a copy of a live tab starts as nobody; a discarded page comes back; a crashed one only with locks', async () => {
    const { open } = browser();
    const a = await chatting(open, 'ann');
    const copy = open(a.tab.copy());
    expect(await copy.saved.load('navigate')).toEqual({ elsewhere: true });
    // The copy dropped the session it was handed, so it never presents that token.
    expect(copy.tab.getItem('confab.session')).toBeNull();
    expect(a.tab.getItem('confab.session')).not.toBeNull();
    // The page goes without pagehide: discarded to save memory, it comes back as itself.
    a.close();
    const discarded = open(a.tab.copy());
    expect(await discarded.saved.load('navigate', true)).toEqual({ session: session('ann') });
    // Crashed: its lock went with it, so it is nobody's and the tab's again. Without locks
    // a crash cannot be told from a copy without asking it, and it starts as nobody.
    discarded.close();
    expect(await open(discarded.tab).saved.load('reload')).toEqual(
      locks ? { session: session('ann') } : { elsewhere: true },
    );
  });

  it.runIf(locks)('a reload waits for the page before it to let its lock go', async () => {
    const { open, locks: manager, shared } = browser();
    const a = await chatting(open, 'ann');
    await until(() => manager?.holder('confab.session.id1') !== undefined);
    away(a);
    // The page going still holds the lock a moment (its browser process hears of it later).
    let release = await manager?.forPage(99).take('confab.session.id1', 0);
    setTimeout(() => release?.(), 300);
    const again = open(a.tab);
    expect(await again.saved.load('reload')).toEqual({ session: session('ann') });
    // The same when its handing over was lost (localStorage full): the tab's own flag says
    // its page went by pagehide.
    away(again);
    shared.removeItem('confab.closed.id1');
    release = await manager?.forPage(99).take('confab.session.id1', 0);
    setTimeout(() => release?.(), 300);
    expect(await open(a.tab).saved.load('reload')).toEqual({ session: session('ann') });
    // Not handed over (it crashed), and held: a copy's, and it waits for nothing.
    const b = await chatting(open, 'bob');
    await until(() => manager?.holder('confab.session.id2') !== undefined);
    const started = Date.now();
    expect(await open(b.tab.copy()).saved.load('reload')).toEqual({ elsewhere: true });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('a tab that comes back after a new tab took its session is nobody, by reload or from the back-forward cache', async () => {
    const { open, closedKeys } = browser();
    const a = await chatting(open, 'ann');
    away(a);
    const taker = open();
    expect(await taker.saved.load('navigate')).toEqual({ session: session('ann') });
    const back = open(a.tab);
    expect(await back.saved.load('reload')).toEqual({ elsewhere: true });
    expect(back.tab.getItem('confab.session')).toBeNull();

    // From the back-forward cache: the page was only hidden, its channel still open.
    const b = await chatting(open, 'bob');
    b.saved.hide();
    expect(await open().saved.load('navigate')).toEqual({ session: session('bob') });
    expect(await b.saved.show()).toBe(false);
    expect(b.tab.getItem('confab.session')).toBeNull();
    // Nobody took it meanwhile: it is still this page's, no longer waiting for a new tab.
    const c = await chatting(open, 'cat');
    c.saved.hide();
    expect(closedKeys()).toEqual(['confab.closed.id3']);
    expect(await c.saved.show()).toBe(true);
    expect(closedKeys()).toEqual([]);
    expect(await open().saved.load('navigate')).toEqual({});
  });

  it('tabs opened at once take each waiting session once', async () => {
    for (let round = 0; round < 6; round++) {
      const { open, closedKeys } = browser();
      const names = ['ann', 'bob', 'cat'];
      const pages = [];
      for (const name of names) pages.push(await chatting(open, name));
      for (const page of pages) away(page);
      const opened = Array.from({ length: 5 }, () => open());
      const loaded = await Promise.all(opened.map((page) => page.saved.load('navigate')));
      const taken = loaded.flatMap((l) => (l.session === undefined ? [] : [l.session.nickname]));
      expect(taken.sort(), `round ${round}`).toEqual(names);
      expect(loaded.filter((l) => l.elsewhere)).toEqual([]);
      expect(closedKeys()).toEqual([]);
      expectHeldAsTaken(opened, loaded);
    }
  });

  it.runIf(locks)(
    'tabs opened at once while the browser is too busy to answer in time take each session once',
    async () => {
      for (let round = 0; round < 4; round++) {
        const { open } = browser(50);
        const names = ['ann', 'bob', 'cat'];
        const pages = [];
        for (const name of names) pages.push(await chatting(open, name));
        for (const page of pages) away(page);
        // Their handing over has reached every page's storage.
        await new Promise((resolve) => setTimeout(resolve, 120));
        const opened = Array.from({ length: 4 }, () => open());
        const loading = opened.map((page) => page.saved.load('navigate'));
        // Every page is busy longer than the tabs' asking waits for an answer (a loaded
        // machine): each one's timer may then run before the others' questions reach it, and
        // what one took reaches the others' storage later still.
        for (let step = 0; step < 3; step++) {
          await new Promise((resolve) => setTimeout(resolve, 1));
          const until = Date.now() + 250;
          while (Date.now() < until) {}
        }
        const loaded = await Promise.all(loading);
        const taken = loaded.flatMap((l) => (l.session === undefined ? [] : [l.session.nickname]));
        expect(taken.sort(), `round ${round}`).toEqual(names);
        expectHeldAsTaken(opened, loaded);
      }
    },
  );

  it.runIf(!locks)(
    'a tab that asked under a higher number gives way to a later asker it heard, and no two take one',
    async () => {
      const { open } = browser();
      away(await chatting(open, 'ann'));
      // The first asks before the second listens, so only the second's question is heard.
      const random = vi.spyOn(Math, 'random').mockReturnValueOnce(0.9).mockReturnValueOnce(0.1);
      const first = open().saved.load('navigate');
      const second = open().saved.load('navigate');
      expect(random).toHaveBeenCalledTimes(2);
      random.mockRestore();
      expect(await Promise.all([first, second])).toEqual([{}, { session: session('ann') }]);
    },
  );

  it('keeps the five newest closed sessions, and gives them newest first', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { open, closedKeys } = browser();
    const names = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7'];
    for (const [i, name] of names.entries()) {
      vi.setSystemTime(1_000_000 + i * 1000);
      // Joined in tabs that did not look for a closed session (else each took the one before).
      const page = open();
      page.saved.save(session(name));
      away(page);
    }
    expect(closedKeys()).toHaveLength(5);
    for (const name of ['n7', 'n6', 'n5', 'n4', 'n3']) {
      expect((await open().saved.load('navigate')).session?.nickname).toBe(name);
    }
    expect(await open().saved.load('navigate')).toEqual({});
  });

  it("removes damaged entries, keeps other sites' keys, and keeps no nickname a server refuses", async () => {
    const { shared, open } = browser();
    const entry = (id: string, fields: Record<string, unknown>) =>
      shared.setItem(`confab.closed.${id}`, JSON.stringify({ id, at: 1, ...fields }));
    shared.setItem('confab.closed.text', 'not json');
    shared.setItem('confab.closed.moved', JSON.stringify({ id: 'other', nickname: 'x', at: 1 }));
    entry('spaced', { nickname: 'two words' });
    entry('long', { nickname: 'x'.repeat(MAX_NICKNAME + 1) });
    entry('undated', { nickname: 'undated', at: undefined });
    entry('numbered', { nickname: 7 });
    shared.setItem('unrelated', 'kept');
    expect(await open().saved.load('navigate')).toEqual({});
    expect(shared.keys()).toEqual(['unrelated']);

    // The longest nickname is kept; rooms that are not strings are dropped; so is a bad token.
    const longest = 'é'.repeat(MAX_NICKNAME);
    entry('fine', { nickname: longest, rooms: ['physics', 3, null, 'art'], resume: 5 });
    expect(await open().saved.load('navigate')).toEqual({
      session: { nickname: longest, resume: undefined, rooms: ['physics', 'art'] },
    });
  });

  it('comes back as a session an earlier version kept in the tab without an id', async () => {
    const { open } = browser();
    const tab = new MemoryStore();
    tab.setItem('confab.session', JSON.stringify(session('old')));
    const page = open(tab);
    expect(await page.saved.load('reload')).toEqual({ session: session('old') });
    away(page);
    expect(await open().saved.load('navigate')).toEqual({ session: session('old') });
  });

  it('disabled storage, or none, or no channel: asks for a nickname, and never throws', async () => {
    for (const [tab, shared] of [
      [broken, broken],
      [undefined, undefined],
      [new MemoryStore(), broken],
    ] as const) {
      const saved = new SavedSessions(tab, shared, undefined, () => 'id');
      expect(await saved.load('navigate')).toEqual({});
      saved.save(session('ann'));
      saved.hide();
      expect(await saved.show()).toBe(true);
      saved.save(undefined);
    }
    // No BroadcastChannel: a closed tab's session still comes back, asking nobody.
    const shared = new MemoryStore();
    const a = new SavedSessions(new MemoryStore(), shared, undefined, () => 'a');
    await a.load('navigate');
    a.save(session('ann'));
    a.hide();
    const b = new SavedSessions(new MemoryStore(), shared, undefined, () => 'b');
    expect(await b.load('navigate')).toEqual({ session: session('ann') });
  });

  it('whatever a user or another script left in storage, load returns a session a server takes, or none', async () => {
    const json = fc.jsonValue({ maxDepth: 3 });
    const stored = fc.oneof(
      fc.string({ maxLength: 80 }),
      json.map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            id: fc.oneof(fc.constant('k'), fc.string({ maxLength: 4 }), json),
            nickname: fc.oneof(
              fc.string({ maxLength: 40 }),
              fc.string({ unit: 'binary', maxLength: 40 }),
              json,
            ),
            rooms: fc.oneof(fc.array(fc.oneof(fc.string(), json), { maxLength: 4 }), json),
            resume: fc.oneof(fc.string(), json),
            at: fc.oneof(fc.double(), fc.integer(), json),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
    );
    await fc.assert(
      fc.asyncProperty(stored, stored, async (closed, own) => {
        const shared = new MemoryStore();
        shared.setItem('confab.closed.k', closed);
        const tab = new MemoryStore();
        tab.setItem('confab.session', own);
        for (const [arrival, store] of [
          ['navigate', new MemoryStore()],
          ['reload', tab],
        ] as const) {
          const saved = new SavedSessions(store, shared, undefined, () => 'new');
          const { session: found } = await saved.load(arrival);
          if (found === undefined) continue;
          expect(found.nickname).toMatch(/^\S+$/u);
          expect([...found.nickname].length).toBeLessThanOrEqual(MAX_NICKNAME);
          expect(Array.isArray(found.rooms)).toBe(true);
          for (const room of found.rooms) expect(typeof room).toBe('string');
          expect(['string', 'undefined']).toContain(typeof found.resume);
        }
      }),
      { numRuns: 300 },
    );
  });
});
