// The web app's entry point: the connection, and what each of its handlers does to the page;
// the sidebar's and the join card's controls; and coming back as the same session after a
// reload. What the page shows, and how, is in the modules it imports.
import { Cmd } from '../../src/protocol/codes.js';
import { asString } from '../../src/protocol/coerce.js';
import { joinRoom, leaveRoom } from './commands.js';
import './composer.js';
import { Connection, RequestError, randomId, type Status } from './connection.js';
import {
  input,
  joinBackdrop,
  joinError,
  joinForm,
  memberList,
  membersPanel,
  membersToggle,
  moreRooms,
  nicknameInput,
  queueNote,
  retryButton,
  roomForm,
  roomList,
  roomName,
  sendButton,
  statusBox,
  statusDetail,
  statusText,
  versionBox,
} from './dom.js';
import { onMessage } from './incoming.js';
import { isolated, line, markNotSent } from './lines.js';
import { memberNames, setStale } from './members.js';
import {
  listMoreRooms,
  MORE_ROOMS_EVERY_MS,
  moreRoomsAskedAt,
  relistMoreRooms,
  showMoreRoomEntries,
} from './more-rooms.js';
import {
  error,
  findView,
  lobby,
  notice,
  removeView,
  select,
  selected,
  setMembers,
} from './rooms.js';
import { askRtt, startRttWatch, stopRttWatch } from './rtt.js';
import { type KeyValueStore, MAX_NICKNAME, SavedSessions, type TabLocks } from './saved-session.js';
import { page, setConnection } from './state.js';
import { append, pendingLine, views } from './views.js';

const STATUS_TEXT: Record<Status, string> = {
  offline: 'Offline',
  connecting: 'Connecting…',
  online: 'Connected',
  reconnecting: 'Reconnecting…',
};

/** Reading `window.sessionStorage` or `localStorage` throws where the browser forbids storage. */
function storage(which: 'sessionStorage' | 'localStorage'): KeyValueStore | undefined {
  try {
    return window[which];
  } catch {
    return undefined;
  }
}

/** The browser's Web Locks, which it gives only a secure context (HTTPS, or loopback). */
function webLocks(): TabLocks | undefined {
  const locks = (navigator as { locks?: LockManager }).locks;
  if (locks === undefined) return undefined;
  return {
    take: (name, waitMs) =>
      new Promise((resolve) => {
        // Not AbortSignal.timeout, which browsers gave pages after Web Locks.
        const abort = new AbortController();
        const timer = waitMs > 0 ? setTimeout(() => abort.abort(), waitMs) : undefined;
        const options: LockOptions = waitMs > 0 ? { signal: abort.signal } : { ifAvailable: true };
        locks
          .request(name, options, (lock) => {
            clearTimeout(timer);
            if (lock === null) {
              resolve(undefined);
              return;
            }
            // Held until let go, or until the page is gone.
            return new Promise<void>((release) => resolve(() => release()));
          })
          .catch(() => {
            clearTimeout(timer);
            resolve(undefined);
          });
      }),
  };
}

const saved = new SavedSessions(
  storage('sessionStorage'),
  storage('localStorage'),
  typeof BroadcastChannel === 'function' ? new BroadcastChannel('confab.sessions') : undefined,
  randomId,
  webLocks(),
);

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const connection = new Connection(wsUrl, {
  rooms: () => views.size,
  status(status, detail) {
    const was = page.shownStatus;
    page.shownStatus = status;
    statusBox.dataset.status = status;
    statusText.textContent = STATUS_TEXT[status];
    statusBox.title = detail ?? '';
    const online = status === 'online';
    // Reconnecting to a server that keeps history, chats are kept and sent once back.
    const canType = online || (status === 'reconnecting' && connection.history);
    input.disabled = !canType;
    sendButton.disabled = !canType;
    retryButton.hidden = status !== 'reconnecting';
    retryButton.disabled = !connection.retryPending;
    // Back online, the list stays stale until USERS has refreshed it (joined).
    if (!online) {
      setStale(true);
      stopRttWatch();
      // An answer to HISTORY will not come on this socket; scrolling up asks again.
      for (const view of views.values()) view.loading = false;
    }
    // Each attempt's countdown replaces the last in the header; the log says once that the
    // connection was lost (and "Reconnected" once it is back), not once per attempt.
    statusDetail.textContent =
      status === 'online' ? '' : (detail ?? (status === 'reconnecting' ? 'Trying now…' : ''));
    if (was === 'online' && status === 'reconnecting') notice('Connection lost. Reconnecting…');
    if (detail !== undefined && status === 'offline') notice(detail);
    // Before the first join the card covers the page, so say there why nothing happens yet;
    // pressing Join again skips the wait.
    if (status === 'connecting' && detail !== undefined && !joinBackdrop.hidden)
      joinError.textContent = detail;
    if (status === 'offline') {
      // Nothing brings the chats still waiting for their "71" back: say so on each.
      for (const li of document.querySelectorAll<HTMLLIElement>('.messages li[data-pending]'))
        markNotSent(li, 'Not sent: disconnected before the server took it');
      showJoin(detail);
    }
  },
  async joined({ nickname, userCount, rejoined, resumed, motd }) {
    setJoinOpen(false);
    page.lastSent = undefined;
    page.restoredRooms = undefined;
    if (!rejoined) {
      // A new session (the user joined again after leaving): the rooms of the old one are gone.
      for (const view of [...views.values()])
        if (view !== lobby && !connection.resume.has(view.name)) removeView(view);
    }
    const wasOperator = resumed ? undefined : page.operatorName;
    if (!resumed) page.operatorName = undefined;
    const text = rejoined
      ? `Reconnected as ${nickname}.${wasOperator === undefined ? '' : ` You are no longer operator ${wasOperator} (a new session): \\oper again.`}`
      : `Welcome, ${nickname}! You are the ${userCount}${ordinalSuffix(userCount)} user. Type \\help for commands.`;
    const said = notice(text, lobby);
    // Its loss was told in the room on screen: so is its end, there too.
    if (rejoined && selected !== lobby) notice(text, selected);
    // The lobby's history, which follows its "101", goes above the welcome and the message of
    // the day. Coming back, what was missed is news, and follows "Reconnected".
    lobby.arriving = rejoined ? [] : [said];
    // Once a page: a new session after a lost one is told it again, and needs it no more.
    if (motd !== undefined && !rejoined) {
      const text = document.createElement('pre');
      text.className = 'motd';
      text.textContent = motd;
      lobby.arriving.push(append(lobby, line('notice', [text])));
    }
    input.focus();
    // Watched from the start: a connection that dies while the lists below load is found too.
    startRttWatch();
    try {
      if (!resumed) {
        setMembers(lobby, memberNames((await connection.call({ cmd: Cmd.USERS }, true)).users));
      }
      setStale(false);
      const version = await connection.call({ cmd: Cmd.VERSION }, true);
      versionBox.textContent = `server v${asString(version.serverVersion)}`;
      await askRtt();
      await listMoreRooms();
    } catch {
      // The connection dropped while loading; reconnecting will try again.
    }
  },
  refused(reason, lostNickname, taken) {
    const name = lostNickname ?? taken;
    if (name === undefined) {
      showJoin(reason);
      return;
    }
    // As IRC clients do: the name with a "_", filled in to take or change.
    const suggestion = freeNickname(name);
    nicknameInput.value = suggestion;
    if (lostNickname === undefined) {
      showJoin(`The nickname “${name}” is taken. Join as ${suggestion}, or pick another one.`);
      return;
    }
    // Joining under another name is still this user coming back: to the same rooms, whose
    // views (and the lines marked not sent in them) stay.
    page.restoredRooms = connection.resume.joined();
    showJoin(
      `Your nickname ${name} was taken by someone else while you were disconnected. Join as ${suggestion}, or pick another one.`,
    );
  },
  message: onMessage,
  queued(waiting, dropped) {
    queueNote.hidden = waiting === 0;
    queueNote.textContent = waiting === 0 ? '' : `${waiting} waiting…`;
    queueNote.title =
      waiting === 0 ? '' : 'Sent in order, as fast as the server allows (its flood limit)';
    if (dropped > 0)
      error(`${dropped} queued ${dropped === 1 ? 'line was' : 'lines were'} not sent.`);
  },
  chatRefused(chat, reason) {
    const view = findView(chat.room);
    if (view === undefined) {
      // Its room was lost (not joined again after a reconnect), and its line with the view.
      const text = chat.action === true ? `/me ${chat.msg}` : chat.msg;
      // Isolated: a bidi control in them cannot turn the page's words around them.
      error(`Not sent to #${isolated(chat.room)}: ${isolated(text)}`, selected);
      return;
    }
    const li = pendingLine(chat.cid);
    if (li !== undefined) markNotSent(li, `Not sent: ${reason}`);
    error(`Not sent: ${reason}`, view);
  },
  chatBanned(chat) {
    const li = chat === undefined ? page.lastSent : pendingLine(chat.cid);
    if (li === undefined) return;
    li.classList.add('refused');
    markNotSent(li, 'Refused: it contains a banned word');
    const view = views.get(li.closest('ol')?.dataset.room ?? '') ?? selected;
    error('Not sent: this message was refused for a banned word.', view);
  },
  roomLost(room, reason) {
    const view = findView(room);
    if (view === undefined) return;
    error(`Could not rejoin #${room}: ${reason}`, view);
    removeView(view);
    notice(`You are no longer in #${room}.`);
  },
  save(session) {
    saved.save(session);
  },
});
setConnection(connection);

/**
 * A nickname like `taken` that nobody in the rooms this page knows has (nina_, nina_2, …).
 * The server may still know someone by it; then the card says so as for any taken name.
 */
function freeNickname(taken: string): string {
  const known = new Set<string>();
  for (const view of views.values()) for (const m of view.members) known.add(m.toLowerCase());
  for (let n = 1; ; n++) {
    const suffix = n === 1 ? '_' : `_${n}`;
    const base = [...taken].slice(0, MAX_NICKNAME - suffix.length).join('');
    const name = `${base}${suffix}`;
    if (!known.has(name.toLowerCase())) return name;
  }
}

function ordinalSuffix(n: number): string {
  if (n % 100 >= 11 && n % 100 <= 13) return 'th';
  return ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
}

/** Joins from the sidebar (its form or its list): the input is typed into next. */
function joinFromSidebar(name: string): void {
  joinRoom(name)
    .then(() => input.focus())
    .catch((err: unknown) => {
      if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
    });
}

roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = roomName.value.trim();
  if (name === '' || /\s/.test(name)) return;
  roomName.value = '';
  showMoreRoomEntries();
  joinFromSidebar(name);
});

roomName.addEventListener('input', showMoreRoomEntries);

roomName.addEventListener('focus', () => {
  if (page.shownStatus !== 'online') return;
  if (performance.now() - moreRoomsAskedAt >= MORE_ROOMS_EVERY_MS) relistMoreRooms();
});

moreRooms.addEventListener('click', (event) => {
  const name = (event.target as HTMLElement).closest('button')?.dataset.join;
  if (name !== undefined) joinFromSidebar(name);
});

roomList.addEventListener('click', (event) => {
  const button = (event.target as HTMLElement).closest('button');
  if (button === null) return;
  const leave = button.dataset.leave;
  if (leave !== undefined) {
    leaveRoom(leave).catch((err: unknown) => {
      if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
    });
    return;
  }
  const view = button.dataset.room === undefined ? undefined : views.get(button.dataset.room);
  if (view !== undefined) select(view);
});

memberList.addEventListener('click', (event) => {
  const button = (event.target as HTMLElement).closest('button');
  const nick = button?.dataset.nick;
  if (nick === undefined || nick === connection.nickname) return;
  input.value = `\\wh ${nick} `;
  input.focus();
  membersPanel.classList.remove('open');
  membersToggle.setAttribute('aria-expanded', 'false');
});

retryButton.addEventListener('click', () => connection.retryNow());
// The network coming back is as good a reason as a click.
window.addEventListener('online', () => connection.retryNow());

membersToggle.addEventListener('click', () => {
  const open = membersPanel.classList.toggle('open');
  membersToggle.setAttribute('aria-expanded', String(open));
});

/** What is behind the join card: out of reach (Tab, clicks, screen readers) while it is open. */
const behindJoin = [
  document.querySelector('header') as HTMLElement,
  document.querySelector('main') as HTMLElement,
];

function setJoinOpen(open: boolean): void {
  joinBackdrop.hidden = !open;
  for (const el of behindJoin) el.inert = open;
}

function showJoin(message?: string): void {
  setJoinOpen(true);
  joinError.textContent = message ?? '';
  nicknameInput.value ||= connection.nickname;
  nicknameInput.focus();
  nicknameInput.select();
}

joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const nickname = nicknameInput.value.trim();
  if (nickname === '' || /\s/.test(nickname)) {
    joinError.textContent = 'Nicknames cannot be empty or contain spaces.';
    return;
  }
  joinError.textContent = '';
  connection.join(nickname, page.restoredRooms && { rooms: page.restoredRooms }, false);
});

/**
 * A reload comes back as the same user, in the same rooms; so does a page opened after
 * the user closed one without leaving (SavedSessions).
 */
async function restoreSession(): Promise<void> {
  const navigation = performance.getEntriesByType('navigation')[0] as
    | PerformanceNavigationTiming
    | undefined;
  const discarded = (document as { wasDiscarded?: boolean }).wasDiscarded === true;
  const { session, elsewhere } = await saved.load(navigation?.type ?? 'navigate', discarded);
  if (session === undefined) {
    if (elsewhere) showElsewhere();
    else showJoin();
    return;
  }
  page.restoredRooms = session.rooms;
  nicknameInput.value = session.nickname;
  // It rejoins by itself; the card only covers the page until it has.
  setJoinOpen(true);
  connection.join(session.nickname, {
    ...(session.resume !== undefined ? { resume: session.resume } : {}),
    rooms: session.rooms,
  });
}

/** This tab's session is another tab's: the card says so, with an empty nickname field. */
function showElsewhere(): void {
  showJoin(
    'You are chatting in another tab of this browser. Pick a nickname to chat here as someone else.',
  );
  // Not the other tab's nickname (connection.nickname, or the browser's form restore).
  nicknameInput.value = '';
}

window.addEventListener('pagehide', () => saved.hide());
window.addEventListener('pageshow', (event) => {
  if (!event.persisted) return;
  void saved.show().then((ours) => {
    if (ours) return;
    // Another tab took this session while the page was away: it is that tab's now.
    connection.leave();
    showElsewhere();
  });
});

void restoreSession();
