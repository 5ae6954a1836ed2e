// What the server says, as it arrives: chats and stored messages put in their rooms, rooms
// joined with their history, gaps in it, members joining, leaving and renamed, moderation and
// errors.
import { Cmd, ErrorCode, mayReconnect } from '../../src/protocol/codes.js';
// What a server sends is shown with asString and asNumber, never String() or Number(): those
// throw for an object whose toString and valueOf are not functions ({"toString": ""}), which
// ended the handling of that message (and of \users, \bans, \rooms: their entries too).
import { asNumber, asString } from '../../src/protocol/coerce.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import { describeModeration } from '../../src/protocol/slash-commands.js';
import { sentence } from '../../src/protocol/text.js';
import {
  chatLine,
  isolated,
  line,
  mentionsMe,
  named,
  nickSpan,
  richText,
  sentOnceBack,
  textSpan,
} from './lines.js';
import { renderMembers } from './members.js';
import { relistMoreRooms, unlistMoreRoom } from './more-rooms.js';
import {
  error,
  findView,
  loadOlder,
  lobby,
  makeView,
  notice,
  onHistory,
  removeMember,
  removeView,
  renameMember,
  selected,
  setMembers,
  viewFor,
} from './rooms.js';
import { page } from './state.js';
import { countUnread } from './unread.js';
import {
  append,
  arrived,
  countOut,
  pendingLine,
  placeStored,
  type RoomView,
  showStored,
  views,
} from './views.js';

/** Why a "101" could not replay everything (docs/protocol.md), in words. */
const NOT_RECOVERED: Record<string, string> = {
  epoch: "the server's stored history was reset or restored",
  ahead: 'the server is behind this page',
  deleted: 'they were already deleted',
  'too-many': 'too many were missed (scroll up to load them)',
  off: 'the server keeps no history',
};

/** Marks where messages are missing, with the server's reason in words. */
function gapMarker(view: RoomView, reason: unknown): void {
  const why = typeof reason === 'string' ? reason : 'unknown';
  const marker = line('marker', [
    `Some messages could not be recovered: ${NOT_RECOVERED[why] ?? why}.`,
  ]);
  marker.dataset.reason = why;
  marker.setAttribute('role', 'note');
  append(view, marker);
}

/**
 * A "108": the server lost messages of a room this page stays in. After a
 * history reset the ids start again in a new epoch, so the lines that follow
 * are told apart from the old ones by it.
 */
function onGap(m: ParsedServerMessage): void {
  const view = viewFor(m.room);
  if (view === undefined) return;
  if (m.reason === 'epoch' && typeof m.epoch === 'string' && m.epoch !== view.epoch) {
    view.epoch = m.epoch;
    view.oldest = undefined;
    view.top = 0;
    view.more = true;
    view.replayIsNew = false;
  }
  gapMarker(view, m.reason);
}

/** A "101": the room is joined (again); its history follows. */
function onRoomJoined(m: ParsedServerMessage): void {
  const room = asString(m.room);
  unlistMoreRoom(room);
  const existing = views.get(room);
  const view = existing ?? makeView(room);
  setMembers(view, Array.isArray(m.members) ? m.members.map((n) => asString(n)) : []);
  const epoch = typeof m.epoch === 'string' ? m.epoch : undefined;
  if (epoch !== view.epoch) {
    view.epoch = epoch;
    view.oldest = undefined;
    view.more = true;
  }
  view.top = typeof m.top === 'number' ? m.top : 0;
  view.replayIsNew = m.recovered === true;
  if (m.recovered === false) gapMarker(view, m.reason);
  if (existing === undefined && view !== lobby) {
    view.arriving.push(notice(`You joined #${room} (${asNumber(m.userCount)} here).`, view));
  }
  arrived(view, view.arriving.splice(0));
  fillOnceArrived(view);
}

/**
 * The history that follows a "101" may not fill the view, leaving nothing to scroll: then
 * more is asked for, once it has arrived (its newest line, the room's top when joined, is
 * shown). A view found part-filled while its lines still came in, on a busy machine, asked
 * for an older page it did not need.
 */
function fillOnceArrived(view: RoomView, tries = 10): void {
  setTimeout(() => {
    const arriving =
      view.top > 0 && view.epoch !== undefined && !view.shown.has(`${view.epoch} ${view.top}`);
    if (arriving && tries > 1) fillOnceArrived(view, tries - 1);
    // Filled, it scrolls: the reader scrolling to its top loads more.
    else if (view.list.scrollHeight <= view.list.clientHeight) loadOlder(view);
  }, 300);
}

export function onMessage(m: ParsedServerMessage): void {
  switch (m.cmd) {
    case Cmd.CHAT_RESPONSE: {
      const from = asString(m.from);
      if (m.whisper === true) {
        const tag = textSpan('tag', 'whisper');
        append(selected, line('whisper', [tag, nickSpan(from), ...richText(asString(m.msg))]));
        countUnread(selected);
        return;
      }
      const view = viewFor(m.room);
      if (view === undefined) return;
      if (typeof m.id === 'number' && view.epoch !== undefined) {
        const history = m.id <= view.top;
        const at = typeof m.at === 'number' ? m.at : undefined;
        const msg = asString(m.msg);
        const action = m.action === true;
        // Scrollback is dimmed, as the terminal does; what a recovery brings is news.
        const past = history && !view.replayIsNew;
        const added = showStored(view, view.epoch, { id: m.id, at, from, msg, action }, past);
        if (added && !past) countUnread(view, mentionsMe(from, msg));
        return;
      }
      const msg = asString(m.msg);
      append(view, chatLine(from, msg, undefined, m.action === true));
      countUnread(view, mentionsMe(from, msg));
      return;
    }
    case Cmd.CHAT_STORED: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      const li = typeof m.cid === 'string' ? pendingLine(m.cid) : undefined;
      if (li === undefined || typeof m.id !== 'number' || view.epoch === undefined) return;
      li.removeAttribute('data-pending');
      const key = `${view.epoch} ${m.id}`;
      // Stored before the connection dropped and replayed since: that copy stands.
      // Its text is counted again where it goes (placeStored), or goes.
      countOut(view, li);
      if (view.shown.has(key)) {
        li.remove();
        return;
      }
      view.shown.add(key);
      if (view.oldest === undefined) view.oldest = m.id;
      li.remove();
      if (li.dataset.queued !== undefined) sentOnceBack(li, m.at);
      placeStored(view, li, view.epoch, m.id);
      return;
    }
    case Cmd.HISTORY_RESPONSE:
      onHistory(m);
      return;
    case Cmd.HISTORY_GAP:
      onGap(m);
      return;
    case Cmd.JOIN_ROOM_SUCCESS:
      onRoomJoined(m);
      return;
    case Cmd.PART_ROOM_SUCCESS: {
      const view = findView(asString(m.room));
      if (view !== undefined) removeView(view);
      notice(`You left #${asString(m.room)}.`);
      relistMoreRooms();
      return;
    }
    case Cmd.NEW_USER_ENTERS: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      const who = asString(m.nickname);
      if (!view.members.includes(who)) view.members.push(who);
      if (view === selected) renderMembers(view);
      notice([named(who), ` joined (${asNumber(m.userCount)} users)`], view);
      return;
    }
    case Cmd.EXIT_BROADCAST: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      removeMember(view, asString(m.nickname));
      notice(
        [
          named(asString(m.nickname)),
          ` left (${asNumber(m.userCount)} ${asNumber(m.userCount) === 1 ? 'user' : 'users'})`,
        ],
        view,
      );
      return;
    }
    case Cmd.USER_RENAMED: {
      const view = viewFor(m.room);
      if (view === undefined) return;
      renameMember(view, asString(m.oldNickname), asString(m.newNickname));
      notice(
        [named(asString(m.oldNickname)), ' is now known as ', named(asString(m.newNickname))],
        view,
      );
      return;
    }
    case Cmd.MODERATION_NOTICE:
      notice(
        describeModeration({
          action: asString(m.action),
          nickname: isolated(asString(m.nickname)),
          by: isolated(asString(m.by)),
          // An operator's words, isolated like names: an override in them reorders nothing after.
          reason: typeof m.reason === 'string' && m.reason !== '' ? isolated(m.reason) : '',
          ...(typeof m.seconds === 'number' ? { seconds: m.seconds } : {}),
        }),
      );
      return;
    case Cmd.ERROR: {
      const text = asString(m.message);
      // A passing reason (the server restarting, cut off from its cluster) is nothing the
      // user did wrong: said as a notice, before the page reconnects by itself.
      const code = asNumber(m.code);
      if (mayReconnect(code)) notice(sentence(text));
      else error(text);
      // Unasked: a reload ended this session's operator status.
      if (code === ErrorCode.NOT_AUTHORIZED && m.ref === undefined) page.operatorName = undefined;
      return;
    }
  }
}
