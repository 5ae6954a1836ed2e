// The commands typed into the composer (\help lists them), and the chats it sends.
import { Cmd, ErrorCode } from '../../src/protocol/codes.js';
// What a server sends is shown with asString and asNumber, never String() or Number(): those
// throw for an object whose toString and valueOf are not functions ({"toString": ""}), which
// ended the handling of that message (and of \users, \bans, \rooms: their entries too).
import { asString } from '../../src/protocol/coerce.js';
import type { ParsedServerMessage } from '../../src/protocol/message-codec.js';
import type { Request, RoomEntry } from '../../src/protocol/messages.js';
import {
  banList,
  describeBan,
  describeUnban,
  NO_ACTIONS,
  NO_PART_REASON,
  NO_QUIT_MESSAGE,
  parseCommand,
  partRefused,
} from '../../src/protocol/slash-commands.js';
import { sentence } from '../../src/protocol/text.js';
import { CONFAB_VERSION } from '../../src/protocol/version.js';
import { RequestError } from './connection.js';
import { WEB_HELP } from './help.js';
import { chatLine, isolated, line, markWaiting, named, richText, textSpan } from './lines.js';
import { memberNames } from './members.js';
import {
  error,
  findView,
  loadOlder,
  lobby,
  notice,
  renameMember,
  select,
  selected,
  setMembers,
} from './rooms.js';
import { measureRtt } from './rtt.js';
import { connection, page } from './state.js';
import { append, type RoomView, views } from './views.js';

export async function joinRoom(name: string): Promise<void> {
  // Already in it: said, as the form and the room list would show nothing new.
  const typeInto = (existing: RoomView) => {
    if (existing === selected)
      append(existing, line('notice', [`You are already in #${existing.name}.`]));
    select(existing);
  };
  const existing = findView(name);
  if (existing !== undefined) {
    typeInto(existing);
    return;
  }
  if (!connection.caps.has('rooms')) {
    error('This server has no rooms besides the lobby.');
    return;
  }
  let reply: ParsedServerMessage;
  try {
    reply = await connection.call({ cmd: Cmd.JOIN_ROOM, room: name });
  } catch (err) {
    // A look-alike spelling of a room it is in ("Mаths" with a Cyrillic "а"), which only the
    // server tells: its 1016 names the room.
    const joined =
      err instanceof RequestError && err.code === ErrorCode.ALREADY_IN_ROOM
        ? findView(err.room ?? '')
        : undefined;
    if (joined === undefined) throw err;
    typeInto(joined);
    return;
  }
  const view = findView(asString(reply.room));
  if (view !== undefined) select(view);
}

export async function leaveRoom(name: string): Promise<void> {
  const view = findView(name);
  if (view === lobby) {
    error('The lobby is left with \\exit.');
    return;
  }
  await connection.call({ cmd: Cmd.PART_ROOM, room: view?.name ?? name });
}

function sendChat(text: string, action = false): void {
  const view = selected;
  const chat = connection.chat(view.name, text, action);
  const li = chatLine(connection.nickname, text, undefined, action);
  // Shown at once; its place among stored messages is known when "71" gives its id.
  if (chat !== undefined) li.dataset.pending = chat.cid;
  // Typed while the connection is down: sent once it is back.
  if (chat !== undefined && page.shownStatus !== 'online') markWaiting(li);
  append(view, li);
  page.lastSent = li;
}

export async function submit(text: string): Promise<void> {
  const command = parseCommand(text);
  try {
    switch (command.kind) {
      case 'empty':
        return;
      case 'chat':
        sendChat(command.text);
        return;
      case 'action':
        if (!connection.caps.has('actions')) error(NO_ACTIONS);
        else sendChat(command.text, true);
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
          const tag = textSpan('tag', `to ${command.to}`);
          append(selected, line('whisper mine', [tag, ...richText(command.text)]));
        }
        return;
      }
      case 'rename': {
        const old = connection.nickname;
        const reply = await connection.call({ cmd: Cmd.RENAME, newNickname: command.nickname });
        if (reply.cmd === Cmd.RENAME_DUPLICATE_NICKNAME) {
          // The server answers a rename to one's own name as it answers one to a taken name.
          error(
            command.nickname === old
              ? `You are already ${command.nickname}.`
              : `The nickname “${command.nickname}” is taken.`,
          );
          return;
        }
        connection.nickname = asString(reply.newNickname);
        for (const view of views.values()) renameMember(view, old, connection.nickname);
        connection.saveSession();
        notice(`You are now known as ${connection.nickname}.`);
        return;
      }
      case 'users': {
        const view = command.room === undefined ? selected : findView(command.room);
        const room = view?.name ?? command.room ?? lobby.name;
        const request: Request = view === lobby ? { cmd: Cmd.USERS } : { cmd: Cmd.USERS, room };
        const names = memberNames((await connection.call(request)).users);
        if (view !== undefined) setMembers(view, names);
        // Each name isolated: one ending in U+202E showed the names after it reversed.
        notice([
          command.room === undefined
            ? `${names.length} in the room: `
            : `${names.length} in #${room}: `,
          ...names.flatMap((name, i) => (i === 0 ? [named(name)] : [', ', named(name)])),
        ]);
        return;
      }
      case 'rtt':
        await measureRtt(true);
        return;
      case 'version': {
        const reply = await connection.call({ cmd: Cmd.VERSION });
        notice(
          `Server version ${asString(reply.serverVersion)}, web client confab ${CONFAB_VERSION}`,
        );
        return;
      }
      case 'help': {
        const pre = document.createElement('pre');
        pre.textContent = WEB_HELP;
        append(selected, line('notice', [pre]));
        return;
      }
      case 'oper': {
        const reply = await connection.call({
          cmd: Cmd.OPER,
          name: command.name,
          password: command.password,
        });
        page.operatorName = asString(reply.name);
        notice(`You are now operator ${page.operatorName}.`);
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
        const { bans, unsaved } = await connection.call(request);
        showBans(bans);
        showUnsaved(unsaved);
        return;
      }
      case 'unban': {
        const answer = await connection.call({ cmd: Cmd.UNBAN, mask: command.mask });
        const said = describeUnban(command.mask, answer.removed);
        if (said !== undefined) notice(said);
        showBans(answer.bans);
        showUnsaved(answer.unsaved);
        return;
      }
      case 'bans':
        showBans((await connection.call({ cmd: Cmd.BANS })).bans);
        return;
      case 'exit':
        page.restoredRooms = undefined;
        if (command.message !== undefined) notice(NO_QUIT_MESSAGE);
        connection.leave();
        return;
      case 'invalid':
        error(command.message);
        return;
      case 'join':
        await joinRoom(command.room);
        return;
      case 'part': {
        const refused = partRefused(command, (room) => findView(room) !== undefined);
        if (refused !== undefined) {
          error(refused);
          return;
        }
        await leaveRoom(command.room ?? selected.name);
        if (command.reason !== undefined) notice(NO_PART_REASON);
        return;
      }
      case 'room': {
        const view = findView(command.room);
        if (view === undefined) error(`You are not in #${command.room}; \\join it first.`);
        else select(view);
        return;
      }
      case 'history':
        if (!connection.history) error('This server keeps no history.');
        else if (!selected.more || (selected.oldest ?? 1) <= 1) {
          append(selected, line('notice', [`Nothing older in #${selected.name}.`]));
        } else loadOlder(selected, command.count);
        return;
      case 'rooms': {
        const reply = (await connection.call({ cmd: Cmd.ROOMS })).rooms;
        // Whatever a server sent: entries of the wrong kind threw, and \\rooms showed nothing.
        const rooms: unknown[] = Array.isArray(reply) ? reply : [];
        const pre = document.createElement('pre');
        pre.textContent = rooms
          .map((entry) => {
            const r = (
              typeof entry === 'object' && entry !== null ? entry : {}
            ) as Partial<RoomEntry>;
            return `${r.joined === true ? '*' : ' '} #${asString(r.room)} (${asString(r.userCount)})`;
          })
          .join('\n');
        append(selected, line('notice', [pre]));
        return;
      }
    }
  } catch (err) {
    if (err instanceof RequestError && err.reply !== 'closed') error(err.message);
  }
}

/** A "98"'s `unsaved`: the change just shown holds only until the server restarts. */
function showUnsaved(unsaved: unknown): void {
  if (typeof unsaved === 'string') error(sentence(unsaved));
}

function showBans(bans: unknown): void {
  // Entries of the wrong kind threw in describeBan, and the command showed nothing.
  const list = banList(bans);
  if (list.length === 0) {
    notice('No bans.');
    return;
  }
  const pre = document.createElement('pre');
  pre.textContent = list
    .map((b) =>
      describeBan({
        ...b,
        mask: oneLine(b.mask),
        by: oneLine(b.by),
        reason: b.reason === '' ? '' : oneLine(b.reason),
      }),
    )
    .join('\n');
  append(selected, line('notice', [pre]));
}

/**
 * Words a server sent, for a line of a listing kept in a <pre>: its line breaks shown as "↵",
 * so that a ban's reason cannot add lines that look like other bans, and isolated.
 */
function oneLine(text: string): string {
  return isolated(text.replace(/[\r\n\v\f\u0085\u2028\u2029]/g, '↵'));
}
