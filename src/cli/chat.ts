import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { ChatClient, ChatClientError } from '../client/chat-client.js';
import { ErrorCode, LOBBY } from '../protocol/codes.js';
import type { UserEntry } from '../protocol/messages.js';
import { HELP, parseCommand } from '../protocol/slash-commands.js';
import { CONFAB_VERSION } from '../version.js';
import { type Style, view } from './chat-view.js';

export const CHAT_USAGE = `Usage: confab chat <nickname> [--host H] [--port P]

Joins a confab server (or the course's Python server) as <nickname>.
  --host H   server address (default 127.0.0.1, env CONFAB_HOST)
  --port P   server port (default 20825, env CONFAB_PORT)
  --help     show this help

Type \\help once connected for the commands. If the server goes away the
client says so and exits with status 1.`;

export interface ChatIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

/** How long after sending a message a silent close is blamed on its content. */
const BANNED_HINT_WINDOW_MS = 2000;
/** \exit, Ctrl+C and Ctrl+D close the connection within this, even if the server is silent. */
const LEAVE_DEADLINE_MS = 800;

function connectFailure(err: unknown, nickname: string, where: string): string {
  if (!(err instanceof ChatClientError)) return `Could not connect to ${where}: ${String(err)}`;
  switch (err.kind) {
    case 'nickname-taken':
      return `The nickname "${nickname}" is taken (or not allowed). Pick another one.`;
    case 'room-full':
      return 'The chat room is full. Try again later.';
    case 'refused':
      return `Could not connect to ${where}: connection refused. Is the server running?`;
    case 'timeout':
      return `Could not connect to ${where}: no answer.`;
    case 'server-error':
      return err.code === ErrorCode.INVALID_NICKNAME
        ? `That nickname is not allowed: ${err.message}.`
        : `The server refused: ${err.message}.`;
    default:
      return `Could not join ${where}: ${err.message}.`;
  }
}

export async function chat(args: string[], io: ChatIo): Promise<number> {
  let parsed: ReturnType<
    typeof parseArgs<{
      options: { host: { type: 'string' }; port: { type: 'string' }; help: { type: 'boolean' } };
      allowPositionals: true;
    }>
  >;
  try {
    parsed = parseArgs({
      args,
      options: { host: { type: 'string' }, port: { type: 'string' }, help: { type: 'boolean' } },
      allowPositionals: true,
    });
  } catch (err) {
    io.stderr.write(`confab chat: ${(err as Error).message}\n\n${CHAT_USAGE}\n`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout.write(`${CHAT_USAGE}\n`);
    return 0;
  }
  const nickname = parsed.positionals[0];
  if (nickname === undefined || parsed.positionals.length > 1) {
    io.stderr.write(`confab chat: give exactly one nickname\n\n${CHAT_USAGE}\n`);
    return 2;
  }
  const host = parsed.values.host ?? io.env.CONFAB_HOST ?? '127.0.0.1';
  const port = Number(parsed.values.port ?? io.env.CONFAB_PORT ?? 20825);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    io.stderr.write(`confab chat: --port must be a number from 1 to 65535\n`);
    return 2;
  }
  const style: Style = {
    color: io.stdout.isTTY === true && (io.env.NO_COLOR ?? '') === '',
  };
  const where = `${host}:${port}`;

  let client: ChatClient;
  try {
    client = await ChatClient.connect({ host, port, nickname });
  } catch (err) {
    io.stderr.write(`${view.error(style, connectFailure(err, nickname, where))}\n`);
    return 1;
  }

  const terminal = io.stdin.isTTY === true && io.stdout.isTTY === true;
  // Rooms: the one typed into (as the server shows its name), and the others joined.
  let current = LOBBY;
  const joined = new Set<string>([LOBBY]);
  const promptFor = (name: string) =>
    view.prompt(style, name, current === LOBBY ? undefined : current);
  /** The tag a line from `room` gets: none for the room being typed into. */
  const from = (room: string) => (room === current ? undefined : room);
  /** A room the user names, as the server showed it when joined (letter case aside). */
  const known = (name: string) =>
    [...joined].find((r) => r === name) ??
    [...joined].find((r) => r.toLowerCase() === name.toLowerCase());
  /** One "91" comes per shared room; the user hears of a rename once. */
  let lastRename = '';
  const rl = readline.createInterface({
    input: io.stdin,
    output: io.stdout,
    terminal,
    historySize: 500,
    prompt: promptFor(client.nickname),
  });

  /** Prints above the input line, then redraws the prompt and whatever was typed. */
  const say = (text: string) => {
    if (terminal) {
      readline.clearLine(io.stdout, 0);
      readline.cursorTo(io.stdout, 0);
      io.stdout.write(`${text}\n`);
      rl.prompt(true);
    } else {
      io.stdout.write(`${text}\n`);
    }
  };

  client.on('chat', (m) =>
    say(
      m.whisper
        ? view.whisperIn(style, new Date(), m.from, m.msg)
        : view.chat(style, new Date(), m.from, m.msg, from(m.room)),
    ),
  );
  client.on('join', (m) =>
    say(view.join(style, new Date(), m.nickname, m.userCount, from(m.room))),
  );
  client.on('leave', (m) =>
    say(view.leave(style, new Date(), m.nickname, m.userCount, from(m.room))),
  );
  client.on('rename', (m) => {
    const key = `${m.oldNickname}\n${m.newNickname}`;
    if (key === lastRename) return;
    lastRename = key;
    say(view.rename(style, new Date(), m.oldNickname, m.newNickname));
  });
  client.on('server-error', (e) => {
    if (e.code < 2000) say(view.error(style, `Refused: ${e.message}.`));
  });

  let leaving = false;
  let lastMessageAt = 0;
  let result: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    result = resolve;
  });

  client.on('close', ({ error }) => {
    if (leaving) return;
    let reason = 'The server closed the connection.';
    if (error?.code === ErrorCode.BANNED_WORDS) {
      reason = 'You were disconnected: your message contained a banned word.';
    } else if (error !== undefined) {
      reason = `You were disconnected: ${error.message}.`;
    } else if (Date.now() - lastMessageAt < BANNED_HINT_WINDOW_MS && client.caps.length === 0) {
      reason =
        'The server closed the connection right after your message (it may contain a banned word).';
    }
    say(view.error(style, reason));
    rl.close();
    result(1);
  });

  // Lines are handled strictly in order, even when a reply is awaited.
  let queue = Promise.resolve();

  /**
   * Leaving never waits behind a line that awaits a reply: it starts at once,
   * lets the lines typed before it finish if the server answers, sends EXIT,
   * and drops the connection after LEAVE_DEADLINE_MS whatever happens.
   */
  const leave = async () => {
    if (leaving) return;
    leaving = true;
    process.off('SIGINT', onSignal);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LEAVE_DEADLINE_MS);
    });
    await Promise.race([queue.catch(() => {}), deadline]);
    if (!client.isClosed) await Promise.race([client.exit().catch(() => {}), deadline]);
    clearTimeout(timer);
    client.destroy();
    rl.close();
    result(0);
  };
  // Without a terminal, readline does not see Ctrl+C; the process does.
  const onSignal = () => {
    void leave();
  };
  if (!terminal) process.on('SIGINT', onSignal);
  // Only now, with every handler in place, does the user (or a script) learn it is in.
  say(view.welcome(style, client.serverAddress, client.nickname, client.userCount));

  const handle = async (line: string): Promise<void> => {
    const command = parseCommand(line);
    const now = new Date();
    try {
      switch (command.kind) {
        case 'empty':
          return;
        case 'chat':
          if (terminal) {
            // Replace the echoed input line with the formatted message.
            readline.moveCursor(io.stdout, 0, -1);
            readline.clearLine(io.stdout, 0);
          }
          lastMessageAt = Date.now();
          client.chat(command.text, current);
          say(view.chat(style, now, client.nickname, command.text));
          return;
        case 'whisper':
          lastMessageAt = Date.now();
          await client.whisper(command.to, command.text);
          say(view.whisperOut(style, now, command.to, command.text));
          return;
        case 'users':
          say(view.users(style, (await client.users(current)) as UserEntry[]));
          return;
        case 'join': {
          const room = await client.join(command.room);
          joined.add(room.room);
          say(view.info(style, view.joinedRoom(style, room.room, room.members)));
          return;
        }
        case 'part': {
          const name = command.room ?? current;
          if (name === LOBBY && client.hasRooms) {
            say(view.error(style, 'Everyone stays in the lobby; \\exit leaves the server.'));
            return;
          }
          const room = await client.part(known(name) ?? name);
          joined.delete(room);
          say(view.info(style, `You left ${room}.`));
          if (room === current) {
            current = LOBBY;
            rl.setPrompt(promptFor(client.nickname));
            say(view.info(style, 'You are typing into the lobby.'));
          }
          return;
        }
        case 'rooms':
          say(view.rooms(style, await client.rooms(), current));
          return;
        case 'room': {
          const room = known(command.room);
          if (!client.hasRooms) {
            say(view.error(style, 'This server does not support rooms.'));
          } else if (room === undefined) {
            say(view.error(style, `You are not in ${command.room}; \\join it first.`));
          } else {
            current = room;
            rl.setPrompt(promptFor(client.nickname));
            say(view.info(style, `You are typing into ${room}.`));
          }
          return;
        }
        case 'rename': {
          const name = await client.rename(command.nickname);
          rl.setPrompt(promptFor(name));
          say(view.info(style, `You are now known as ${name}.`));
          return;
        }
        case 'rtt':
          say(view.info(style, `RTT: ${(await client.rtt()).toFixed(3)} ms`));
          return;
        case 'version':
          say(
            view.info(
              style,
              `Server version ${await client.version()}, client confab ${CONFAB_VERSION}`,
            ),
          );
          return;
        case 'help':
          say(HELP);
          return;
        case 'exit': // handled before the queue, so it never waits
          return;
        case 'invalid':
          say(view.error(style, command.message));
          return;
      }
    } catch (err) {
      if (!(err instanceof ChatClientError)) throw err;
      if (err.kind === 'closed') return; // the close handler explains
      if (err.kind === 'nickname-taken' && command.kind === 'rename') {
        say(view.error(style, `The nickname "${command.nickname}" is taken.`));
      } else if (err.kind === 'no-such-user' && command.kind === 'whisper') {
        say(view.error(style, `There is no user named "${command.to}".`));
      } else if (err.kind === 'whisper-to-self') {
        say(view.error(style, "You can't whisper to yourself."));
      } else if (err.kind === 'not-supported') {
        say(view.error(style, 'This server does not support rooms.'));
      } else {
        say(view.error(style, err.message));
      }
    }
  };

  rl.on('line', (line) => {
    if (leaving) return;
    if (parseCommand(line).kind === 'exit') {
      void leave();
      return;
    }
    queue = queue.then(() => handle(line));
  });
  rl.on('SIGINT', () => void leave());
  rl.on('close', () => void leave());
  if (terminal) rl.prompt();
  return done;
}
