import { Cmd } from '../../src/protocol/codes.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import type { BanEntry, Request } from '../../src/protocol/messages.js';
import {
  describeModeration,
  formatDuration,
  HELP,
  parseCommand,
} from '../../src/protocol/slash-commands.js';
import { nickColor, PAGE_BG } from './colors.js';
import { Connection, RequestError, type Status } from './connection.js';
import { findLinks } from './links.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const messages = $<HTMLOListElement>('messages');
const input = $<HTMLInputElement>('input');
const composer = $<HTMLFormElement>('composer');
const sendButton = composer.querySelector('button') as HTMLButtonElement;
const joinBackdrop = $<HTMLDivElement>('join');
const joinForm = $<HTMLFormElement>('join-form');
const nicknameInput = $<HTMLInputElement>('nickname');
const joinError = $<HTMLParagraphElement>('join-error');
const statusBox = $<HTMLSpanElement>('status');
const statusText = $<HTMLSpanElement>('status-text');
const rttBox = $<HTMLSpanElement>('rtt');
const versionBox = $<HTMLSpanElement>('version');
const memberList = $<HTMLUListElement>('member-list');
const membersPanel = $<HTMLElement>('members');
const membersToggle = $<HTMLButtonElement>('members-toggle');
const countBig = $<HTMLSpanElement>('members-count');
const countSmall = $<HTMLSpanElement>('members-count-small');
const retryButton = $<HTMLButtonElement>('retry');
const staleNote = $<HTMLParagraphElement>('members-stale');

// Lines typed or pasted faster than the server allows wait their turn; this
// says how many, beside the Send button, so a slow trickle does not look lost.
const queueNote = document.createElement('span');
queueNote.id = 'queue';
queueNote.className = 'queue-note';
queueNote.setAttribute('role', 'status');
queueNote.hidden = true;
composer.insertBefore(queueNote, sendButton);

const members: string[] = [];
let rttTimer: ReturnType<typeof setInterval> | undefined;

// ---- rendering --------------------------------------------------------------

function nickSpan(nickname: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = 'nick';
  span.textContent = nickname;
  // Both schemes' colours ride along, so switching the system theme recolours
  // old lines too; style.css picks one. CSSOM sets pass `style-src 'self'`.
  span.style.setProperty('--nick-light', nickColor(PAGE_BG.light, nickname));
  span.style.setProperty('--nick-dark', nickColor(PAGE_BG.dark, nickname));
  return span;
}

/** Message text with http(s) links made clickable; everything else stays text. */
function richText(text: string): (Node | string)[] {
  return findLinks(text).map(({ text, href }) => {
    if (href === undefined) return text;
    const a = document.createElement('a');
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.textContent = text;
    return a;
  });
}

function stamp(): HTMLTimeElement {
  const t = document.createElement('time');
  const now = new Date();
  t.dateTime = now.toISOString();
  t.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return t;
}

/** Appends a line; keeps the view pinned to the bottom unless the reader scrolled up. */
function append(className: string, ...parts: (Node | string)[]): HTMLLIElement {
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
  const li = document.createElement('li');
  li.className = className;
  li.append(stamp(), ...parts);
  messages.append(li);
  if (atBottom) messages.scrollTop = messages.scrollHeight;
  return li;
}

const notice = (text: string) => append('notice', text);
const error = (text: string) => append('error', text);

function renderMembers(): void {
  memberList.replaceChildren(
    ...members.map((name) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.nick = name;
      const avatar = document.createElement('span');
      avatar.className = 'avatar';
      // Its letter is white (style.css), so the colour is chosen against white.
      avatar.style.background = nickColor('#ffffff', name);
      avatar.textContent = [...name][0]?.toUpperCase() ?? '?';
      avatar.setAttribute('aria-hidden', 'true');
      button.append(avatar, name);
      if (name === connection.nickname) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        button.append(you);
        button.setAttribute('aria-label', `${name} (you)`);
      } else {
        button.setAttribute('aria-label', `Whisper to ${name}`);
      }
      li.append(button);
      return li;
    }),
  );
  countBig.textContent = String(members.length);
  countSmall.textContent = String(members.length);
}

function setMembers(names: string[]): void {
  members.splice(0, members.length, ...names);
  renderMembers();
}

/** While offline the list shows who was there, not who is: say so, to eyes and to screen readers. */
function setStale(stale: boolean): void {
  membersPanel.dataset.stale = String(stale);
  staleNote.hidden = !stale;
  if (stale) memberList.setAttribute('aria-describedby', 'members-stale');
  else memberList.removeAttribute('aria-describedby');
}

// ---- unread count while the tab is hidden -------------------------------------

const baseTitle = document.title;
let unread = 0;

function countUnread(): void {
  if (document.visibilityState !== 'hidden') return;
  unread++;
  document.title = `(${unread}) ${baseTitle}`;
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  unread = 0;
  document.title = baseTitle;
});

function removeMember(name: string): void {
  const i = members.findIndex((m) => m.toLowerCase() === name.toLowerCase());
  if (i >= 0) members.splice(i, 1);
  renderMembers();
}

// ---- connection -------------------------------------------------------------

const STATUS_TEXT: Record<Status, string> = {
  offline: 'Offline',
  connecting: 'Connecting…',
  online: 'Connected',
  reconnecting: 'Reconnecting…',
};

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const connection = new Connection(wsUrl, {
  status(status, detail) {
    statusBox.dataset.status = status;
    statusText.textContent = STATUS_TEXT[status];
    statusBox.title = detail ?? '';
    const online = status === 'online';
    input.disabled = !online;
    sendButton.disabled = !online;
    retryButton.hidden = status !== 'reconnecting';
    retryButton.disabled = !connection.retryPending;
    // Back online, the list stays stale until USERS has refreshed it (joined).
    if (!online) {
      setStale(true);
      clearInterval(rttTimer);
      rttBox.textContent = '';
    }
    if (detail !== undefined && status !== 'online') notice(detail);
    // Before the first join the card covers the page, so say there why nothing happens yet;
    // pressing Join again skips the wait.
    if (status === 'connecting' && detail !== undefined && !joinBackdrop.hidden)
      joinError.textContent = detail;
    if (status === 'offline') {
      showJoin(detail);
    }
  },
  async joined({ nickname, userCount, rejoined }) {
    joinBackdrop.hidden = true;
    notice(
      rejoined
        ? `Reconnected as ${nickname}.`
        : `Welcome, ${nickname}! You are the ${userCount}${ordinalSuffix(userCount)} user. Type \\help for commands.`,
    );
    input.focus();
    try {
      const users = (await connection.call({ cmd: Cmd.USERS })).users as [string, string, number][];
      setMembers(users.map(([n]) => n));
      setStale(false);
      const version = await connection.call({ cmd: Cmd.VERSION });
      versionBox.textContent = `server v${String(version.serverVersion)}`;
      await measureRtt(false);
    } catch {
      // The connection dropped while loading; reconnecting will try again.
    }
    clearInterval(rttTimer);
    // A drop between two ticks is reported by the status, not as an unhandled rejection.
    rttTimer = setInterval(() => measureRtt(false).catch(() => {}), 10_000);
  },
  refused(reason) {
    showJoin(reason);
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
});

function ordinalSuffix(n: number): string {
  if (n % 100 >= 11 && n % 100 <= 13) return 'th';
  return ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
}

function onMessage(m: ParsedServerMessage): void {
  switch (m.cmd) {
    case Cmd.CHAT_RESPONSE: {
      const from = String(m.from);
      if (m.whisper === true) {
        const tag = document.createElement('span');
        tag.className = 'tag';
        tag.textContent = 'whisper';
        append('whisper', tag, nickSpan(from), ...richText(String(m.msg)));
      } else {
        append('msg', nickSpan(from), ...richText(String(m.msg)));
      }
      countUnread();
      return;
    }
    case Cmd.NEW_USER_ENTERS: {
      const who = String(m.nickname);
      if (!members.includes(who)) members.push(who);
      renderMembers();
      notice(`${who} joined (${Number(m.userCount)} users)`);
      return;
    }
    case Cmd.EXIT_BROADCAST:
      removeMember(String(m.nickname));
      notice(
        `${String(m.nickname)} left (${Number(m.userCount)} ${Number(m.userCount) === 1 ? 'user' : 'users'})`,
      );
      return;
    case Cmd.USER_RENAMED: {
      const i = members.indexOf(String(m.oldNickname));
      if (i >= 0) members.splice(i, 1);
      members.push(String(m.newNickname));
      renderMembers();
      notice(`${String(m.oldNickname)} is now known as ${String(m.newNickname)}`);
      return;
    }
    case Cmd.MODERATION_NOTICE:
      notice(
        describeModeration({
          action: String(m.action),
          nickname: String(m.nickname),
          by: String(m.by),
          reason: String(m.reason ?? ''),
          ...(typeof m.seconds === 'number' ? { seconds: m.seconds } : {}),
        }),
      );
      return;
    case Cmd.ERROR:
      error(String(m.message));
      return;
  }
}

function showBans(bans: unknown): void {
  const list = Array.isArray(bans) ? (bans as BanEntry[]) : [];
  if (list.length === 0) {
    notice('No bans.');
    return;
  }
  const pre = document.createElement('pre');
  pre.textContent = list
    .map((b) => {
      const until =
        b.expires === null
          ? 'until unbanned'
          : `for ${formatDuration(Math.max(1, Math.round((b.expires - Date.now()) / 1000)))} more`;
      return `${b.mask} by ${b.by} ${until}${b.reason ? ` (${b.reason})` : ''}`;
    })
    .join('\n');
  append('notice', pre);
}

async function measureRtt(announce: boolean): Promise<void> {
  const begin = performance.timeOrigin + performance.now();
  const reply = await connection.call({ cmd: Cmd.RTT, beginTime: begin });
  const ms = performance.timeOrigin + performance.now() - Number(reply.beginTime);
  rttBox.textContent = `RTT ${ms.toFixed(1)} ms`;
  if (announce) notice(`RTT: ${ms.toFixed(3)} ms`);
}

// ---- input ------------------------------------------------------------------

async function submit(line: string): Promise<void> {
  const command = parseCommand(line);
  try {
    switch (command.kind) {
      case 'empty':
        return;
      case 'chat':
        connection.send({ cmd: Cmd.CHAT, msg: command.text });
        append('msg mine', nickSpan(connection.nickname), ...richText(command.text));
        return;
      case 'whisper': {
        const reply = await connection.call({
          cmd: Cmd.WHISPER,
          to: command.to,
          msg: command.text,
        });
        if (reply.cmd === Cmd.WHISPER_NO_SUCH_USER)
          error(`There is no user named “${command.to}”.`);
        else if (reply.cmd === Cmd.WHISPER_MYSELF) error("You can't whisper to yourself.");
        else {
          const tag = document.createElement('span');
          tag.className = 'tag';
          tag.textContent = `to ${command.to}`;
          append('whisper mine', tag, ...richText(command.text));
        }
        return;
      }
      case 'rename': {
        const old = connection.nickname;
        const reply = await connection.call({ cmd: Cmd.RENAME, newNickname: command.nickname });
        if (reply.cmd === Cmd.RENAME_DUPLICATE_NICKNAME) {
          error(`The nickname “${command.nickname}” is taken.`);
          return;
        }
        connection.nickname = String(reply.newNickname);
        const i = members.indexOf(old);
        if (i >= 0) members.splice(i, 1);
        members.push(connection.nickname);
        renderMembers();
        notice(`You are now known as ${connection.nickname}.`);
        return;
      }
      case 'users': {
        const users = (await connection.call({ cmd: Cmd.USERS })).users as [
          string,
          string,
          number,
        ][];
        setMembers(users.map(([n]) => n));
        notice(`${users.length} in the room: ${users.map(([n]) => n).join(', ')}`);
        return;
      }
      case 'rtt':
        await measureRtt(true);
        return;
      case 'version': {
        const reply = await connection.call({ cmd: Cmd.VERSION });
        notice(`Server version ${String(reply.serverVersion)}, web client confab`);
        return;
      }
      case 'help': {
        const pre = document.createElement('pre');
        pre.textContent = `${HELP}\nClick a member to whisper to them.`;
        append('notice', pre);
        return;
      }
      case 'oper': {
        const reply = await connection.call({
          cmd: Cmd.OPER,
          name: command.name,
          password: command.password,
        });
        notice(`You are now operator ${String(reply.name)}.`);
        return;
      }
      case 'kick':
        connection.send(
          command.reason === ''
            ? { cmd: Cmd.KICK, nickname: command.nickname }
            : { cmd: Cmd.KICK, nickname: command.nickname, reason: command.reason },
        );
        return;
      case 'ban': {
        const request: Request = { cmd: Cmd.BAN, mask: command.mask };
        if (command.seconds !== undefined) request.seconds = command.seconds;
        if (command.reason !== '') request.reason = command.reason;
        showBans((await connection.call(request)).bans);
        return;
      }
      case 'unban':
        showBans((await connection.call({ cmd: Cmd.UNBAN, mask: command.mask })).bans);
        return;
      case 'bans':
        showBans((await connection.call({ cmd: Cmd.BANS })).bans);
        return;
      case 'exit':
        connection.leave();
        return;
      case 'invalid':
        error(command.message);
        return;
      case 'join':
      case 'part':
      case 'rooms':
      case 'room':
        error('Rooms are not in the web client yet; confab chat has them.');
        return;
    }
  } catch (err) {
    if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
  }
}

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const line = input.value;
  input.value = '';
  void submit(line);
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

function showJoin(message?: string): void {
  joinBackdrop.hidden = false;
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
  connection.join(nickname);
});
