import { readFileSync } from 'node:fs';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import {
  ChatClient,
  ChatClientError,
  type ChatEvents,
  type ChatMessage,
  type ConnectOptions,
  type JoinedRoom,
  type TlsOptions,
} from '../client/chat-client.js';
import { ErrorCode, LOBBY } from '../protocol/codes.js';
import type { BanEntry, HistoryEntry, Position, UserEntry } from '../protocol/messages.js';
import {
  describeBan,
  describeModeration,
  describeUnban,
  HELP,
  NO_ACTIONS,
  NO_PART_REASON,
  NO_QUIT_MESSAGE,
  parseCommand,
  partRefused,
  tooLongToSend,
} from '../protocol/slash-commands.js';
import { clip, sentence } from '../protocol/text.js';
import { CONFAB_VERSION } from '../protocol/version.js';
import { type Style, view } from './chat-view.js';
import {
  forgetSession,
  type SavedRoom,
  savedEntry,
  saveSession,
  serverKey,
  sessionFile,
} from './saved-sessions.js';
import { parseServers, showServers } from './servers.js';
import { wrapRows } from './wrap.js';

export const CHAT_USAGE = `Usage: confab chat <nickname> [--host H] [--port P] [--tls [--ca FILE] [--servername NAME]] [--no-reconnect] [--no-save-session]

Joins a confab server (or the course's Python server) as <nickname>.
  --host H           server address (default 127.0.0.1, env CONFAB_HOST); several,
                     the nodes of one cluster, as H1,H2:PORT,[::1]:PORT: the first
                     that answers is joined, and a lost connection is restored
                     on the next
  --port P           server port (default 20825, env CONFAB_PORT)
  --tls              connect over TLS (the server's --tls-port); the certificate
                     is verified (env CONFAB_TLS=1)
  --ca FILE          PEM certificate(s) to trust, e.g. a self-signed server's own
                     (env CONFAB_CA)
  --servername NAME  the name the certificate must be for (default: the host)
                     (--ca and --servername imply --tls)
  --no-reconnect     exit when the connection is lost instead of reconnecting, and
                     when the server answers "full" at start instead of trying
                     again for about half a minute (env CONFAB_RECONNECT=0)
  --no-save-session  keep the session's resume token in memory only (env
                     CONFAB_SAVE_SESSION=0); by default it is saved, private to
                     you, in $XDG_STATE_HOME/confab/sessions.json (default
                     ~/.local/state/confab/), so that after a lost connection the
                     client started again takes its session back (rooms and
                     all) instead of finding its nickname taken, or, when that
                     session has ended, joins its rooms again with what was said
                     there meanwhile; \\exit, Ctrl+C and Ctrl+D remove it
  --help             show this help

Type \\help once connected for the commands. Lines typed or pasted faster than
the server allows wait in a queue (shown in the prompt) and go out in order.
A lost connection is restored by itself, with the messages missed meanwhile
(a line says when some could not be), trying until you leave; when the server
refuses it, or with --no-reconnect, the client says so, lists the lines never
acknowledged, and exits with status 1.`;

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
/**
 * How long a line may wait for its reply before the lines typed after it go
 * on. Lines are handled in order, so one reply that never came (a hostile
 * server; a reply over the client's frame limit, which is dropped while its
 * call stays pending) held every later line, chats included, until \exit.
 */
const REPLY_DEADLINE_MS = 10_000;
/**
 * Output held for a stdout that does not keep up (a pipe read slowly, or not at all) before
 * the client stops reading from the server until it drains. Writes to a pipe queue in memory:
 * a server flooding lines made the client hold all of them, without bound (300,000 chats:
 * 188 MB). A terminal is written synchronously and never holds any.
 */
const OUTPUT_BACKLOG_BYTES = 1024 * 1024;
/** Lines shown before the client lets its input be read again (see holdIfBehind). */
const LINES_PER_TURN = 200;
/**
 * How long, and for how many lines, the events that come while a \join waits are held to be
 * shown after its answer: its reply waits one round trip after the server's, and a flood
 * meanwhile is shown as it comes.
 */
const JOIN_HOLD_MS = 2000;
const JOIN_HOLD_LINES = 500;
/** How often at most the last message seen in each room is saved with the session. */
const POSITIONS_SAVE_MS = 5000;
/** Connections lost while a saved session's rooms are joined again, before it gives up on them. */
const REJOIN_RECONNECTS = 3;
/** Names of rooms listed in the line that says they are joined again; the others are counted. */
const REJOIN_NAMES_SHOWN = 5;
/**
 * The waits before each new attempt when the first CONNECT is answered "02" (a full room, or
 * the address's CONNECT budget spent): about half a minute in all, then the client gives up.
 */
const FULL_RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 10_000];

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
    case 'certificate': {
      const code = (err.cause as NodeJS.ErrnoException | undefined)?.code;
      const hint =
        code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH'
          ? 'Use --servername NAME for the name it was issued to.'
          : 'Use --ca FILE to trust it.';
      return `Could not connect to ${where} over TLS: ${err.message}. ${hint}`;
    }
    case 'server-error':
      return err.code === ErrorCode.INVALID_NICKNAME
        ? `That nickname is not allowed: ${err.message}.`
        : `The server refused: ${err.message}.`;
    default:
      return `Could not join ${where}: ${err.message}.`;
  }
}

/** A feature its `--no-…` flag, or its environment variable (0, false, no, off), turns off. */
function turnedOff(flag: boolean | undefined, env: string | undefined): boolean {
  return flag === true || /^(0|false|no|off)$/i.test(env ?? '');
}

/**
 * Why a reconnect is under way, for the line that says so, if one should: a nickname taken
 * meanwhile, or a welcome too large to read, kept the client trying for as long as it was,
 * without a word of why. So did a server that welcomed it and then fell silent: the loss of
 * a connection just restored is said too (past the third attempt, no line says it was
 * lost). A refused connection is a server down or restarting, which "Connection lost" says
 * already. A server's own words are cut short.
 */
function reconnectReason(r: ChatEvents['reconnecting'][0], nickname: string): string | undefined {
  const { kind, message } = r.error;
  if (kind === 'nickname-taken')
    return `The nickname "${nickname}" is taken (perhaps by the lost connection, not yet gone); still trying.`;
  if (kind === 'room-full') return 'The chat room is full or busy; still trying.';
  if (kind === 'refused') return undefined;
  if (r.attemptFailed) return `The last attempt failed: ${clip(message, 200)}; still trying.`;
  if (r.attempt > 1) return `The connection was lost again: ${clip(message, 200)}; still trying.`;
  return undefined;
}

/** Says, once, that a line's request got no answer in time; `told`: whether it has. */
type Unanswered = (() => void) & { told(): boolean };

/** The ban list as lines, each shown on its own (a line break inside one is shown as ^J). */
function banListLines(bans: readonly BanEntry[]): string[] {
  if (bans.length === 0) return ['No bans.'];
  return ['Bans:', ...bans.map((b) => `  ${describeBan(b)}`)];
}

export async function chat(args: string[], io: ChatIo): Promise<number> {
  const options = {
    host: { type: 'string' },
    port: { type: 'string' },
    tls: { type: 'boolean' },
    ca: { type: 'string' },
    servername: { type: 'string' },
    'no-reconnect': { type: 'boolean' },
    'no-save-session': { type: 'boolean' },
    help: { type: 'boolean' },
  } as const;
  let parsed: ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true });
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
  // The server reads the same variables: one exported to start it (CONFAB_PORT=0, any free
  // port) reaches a client started from that shell, which must say where its value came from.
  // Empty is unset, as for CONFAB_CA.
  const portText = parsed.values.port ?? (io.env.CONFAB_PORT || undefined);
  const port = Number(portText ?? 20825);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    const source =
      parsed.values.port === undefined
        ? 'CONFAB_PORT (from the environment; --port overrides it)'
        : '--port';
    const given = clip(portText ?? '', 40);
    io.stderr.write(`confab chat: ${source} must be a number from 1 to 65535, not "${given}"\n`);
    return 2;
  }
  const servers = parseServers(parsed.values.host ?? (io.env.CONFAB_HOST || '127.0.0.1'), port);
  if (typeof servers === 'string') {
    const source =
      parsed.values.host === undefined ? 'CONFAB_HOST (from the environment)' : '--host';
    io.stderr.write(`confab chat: ${source}: ${servers}\n`);
    return 2;
  }
  const caFile = parsed.values.ca ?? (io.env.CONFAB_CA || undefined);
  const useTls =
    parsed.values.tls === true ||
    /^(1|true|yes|on)$/i.test(io.env.CONFAB_TLS ?? '') ||
    parsed.values.servername !== undefined ||
    parsed.values.ca !== undefined;
  let tls: TlsOptions | undefined;
  if (useTls) {
    tls = {};
    if (parsed.values.servername !== undefined) tls.servername = parsed.values.servername;
    if (caFile !== undefined) {
      try {
        tls.ca = readFileSync(caFile);
      } catch (err) {
        io.stderr.write(
          `confab chat: cannot read --ca ${caFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`,
        );
        return 2;
      }
    }
  }
  const style: Style = {
    color: io.stdout.isTTY === true && (io.env.NO_COLOR ?? '') === '',
  };
  const where = showServers(servers);
  const reconnect = !turnedOff(parsed.values['no-reconnect'], io.env.CONFAB_RECONNECT);

  // A restart or an upgrade of the server may take minutes: a person at a terminal is
  // waited for until they leave, at most 10 s between attempts, as the web app does.
  const connectOptions: ConnectOptions = {
    servers,
    nickname,
    history: true,
    actions: true,
    reconnect: reconnect && { attempts: Number.POSITIVE_INFINITY },
  };
  if (tls !== undefined) connectOptions.tls = tls;
  const saving = !turnedOff(parsed.values['no-save-session'], io.env.CONFAB_SAVE_SESSION);
  const tokenFile = sessionFile(io.env);
  const tokenServer = serverKey(servers, useTls, parsed.values.servername);
  // The session of an earlier run of this client that a lost connection left on the server:
  // presented, it is taken back instead of the nickname being "taken" by it.
  const saved = saving ? savedEntry(tokenFile, tokenServer, nickname) : undefined;
  if (saved !== undefined) connectOptions.resume = saved.token;
  let client: ChatClient | undefined;
  for (let attempt = 0; client === undefined; attempt++) {
    try {
      client = await ChatClient.connect(connectOptions);
    } catch (err) {
      // "02" is also the answer to too many CONNECTs from one address just now (flood
      // control): a moment later the same CONNECT is let in. Exiting at once said "the room
      // is full" to a user who only had to wait; a lobby that is full may have a place then too.
      const delayMs = FULL_RETRY_DELAYS_MS[attempt];
      if (
        reconnect &&
        delayMs !== undefined &&
        err instanceof ChatClientError &&
        err.kind === 'room-full'
      ) {
        io.stderr.write(
          `${view.info(style, `The chat room is full or busy; trying again in ${delayMs / 1000} s (${attempt + 1} of ${FULL_RETRY_DELAYS_MS.length}, Ctrl+C gives up)...`)}\n`,
        );
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        continue;
      }
      io.stderr.write(`${view.error(style, connectFailure(err, nickname, where))}\n`);
      return 1;
    }
  }

  /**
   * Rooms of a saved session whose own had ended, still to be joined again (see rejoin): kept
   * in the file meanwhile, so a client that dies before joining them leaves them for the next.
   */
  let pendingRooms: SavedRoom[] =
    saved !== undefined && !client.resumedAtConnect && client.hasRooms
      ? [...(saved.rooms ?? [])]
      : [];
  /** Once told: a file that cannot be written is no reason to stop chatting. */
  let saveFailed = false;
  /** A save of the rooms' positions due (see savePositions). */
  let positionsTimer: NodeJS.Timeout | undefined;
  /**
   * The last message seen in each room moves with every chat: written at most every
   * POSITIONS_SAVE_MS, so a new start after a crash is given what it missed, repeating
   * at most that much as history.
   */
  const savePositions = () => {
    if (!saving || positionsTimer !== undefined) return;
    positionsTimer = setTimeout(saveToken, POSITIONS_SAVE_MS);
    positionsTimer.unref();
  };
  /** Keeps the session's newest token on disk (see saved-sessions.ts), unless leaving. */
  const saveToken = () => {
    clearTimeout(positionsTimer);
    positionsTimer = undefined;
    if (!saving || leaving || client.resumeToken === undefined) return;
    const rooms = client.positions.flatMap(({ room, since }): SavedRoom[] =>
      room === LOBBY ? [] : since === undefined ? [{ room }] : [{ room, ...since }],
    );
    const inRooms = new Set(client.joinedRooms);
    rooms.push(...pendingRooms.filter((p) => !inRooms.has(p.room)));
    try {
      saveSession(tokenFile, tokenServer, client.nickname, client.resumeToken, process.pid, rooms);
    } catch (err) {
      if (saveFailed) return;
      saveFailed = true;
      say(
        view.error(
          style,
          `Could not save the session in ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? String(err)}); after a lost connection, a new start may find your nickname taken for a while.`,
        ),
      );
    }
  };

  const terminal = io.stdin.isTTY === true && io.stdout.isTTY === true;
  // Rooms: the one typed into (as the server shows its name), and the others joined.
  let current = LOBBY;
  const joined = new Set<string>([LOBBY]);
  /** Lines waiting in the client's queue under the server's flood limit (see 'queue' below). */
  let waiting = 0;
  /** The reasons for failed reconnects told in this outage (see 'reconnecting'), each once. */
  const toldWhy = new Set<string>();
  /** Whether the reconnect line of the latest attempt was printed. */
  let attemptShown = true;
  /** Whether the connection being restored was lost moments after it was restored itself. */
  let flapping = false;
  /** The passing reason the server gave for closing, said with the reconnect lines. */
  let closedWith: string | undefined;
  /** Between a lost connection and its restoring: the prompt says so all along. */
  let offline = false;
  const promptFor = () =>
    view.prompt(style, client.nickname, current === LOBBY ? undefined : current, waiting, offline);
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
    prompt: promptFor(),
  });

  let inputClosed = false;
  /** Set once the user quits (\exit, Ctrl+C): no more lines are taken, nor prompted for. */
  let leaving = false;
  /** Set once the server ended the session: what is said then is the last, with no prompt. */
  let ended = false;
  rl.once('close', () => {
    inputClosed = true;
    // The prompt and what was typed stay on their row, and the shell's prompt starts on the
    // next: without the line break it was written right after them ("ann> hiuser@host:~$").
    if (terminal && !ended) io.stdout.write('\n');
  });
  let outputHeld = false;
  let saidThisTurn = 0;
  /** Stops reading from the server while stdout is OUTPUT_BACKLOG_BYTES behind. */
  const holdIfBehind = () => {
    if (++saidThisTurn === LINES_PER_TURN) {
      // Each read of the socket took a whole burst of lines, written to a terminal one by
      // one: a flood kept the event loop so busy that Ctrl+D was seen seconds late. Reading
      // waits for the next turn, after the input has been read.
      client.pauseReading();
      setImmediate(() => {
        saidThisTurn = 0;
        if (!outputHeld) client.resumeReading();
      });
    }
    if (outputHeld || io.stdout.writableLength < OUTPUT_BACKLOG_BYTES) return;
    outputHeld = true;
    client.pauseReading();
    io.stdout.once('drain', () => {
      outputHeld = false;
      client.resumeReading();
    });
  };

  /**
   * Lines written to the terminal, the input's echoes counted: a chat's echo is replaced by
   * the formatted line only while it is still the last one (a reply to an earlier line, such
   * as "You joined", may have come after it).
   */
  let lines = 0;
  /**
   * The rows of the typed line above the cursor as the screen shows them, kept when the
   * prompt changes (showPrompt) until the next redraw: measured with the new prompt, a
   * longer or shorter one, they would be wrong, and the redraw would erase what was printed.
   */
  let drawnRows: number | undefined;
  /** A paste being read (see `pasted`), and the rows of its first echo, -1 for none. */
  let pasteTurn = false;
  let firstRows = -1;
  /** Prints above the input line, then redraws the prompt and whatever was typed. */
  const say = (text: string) => {
    // On a terminal the client breaks its own rows (src/cli/wrap.ts), also when its input
    // is a pipe: left long, a chat padded to the row's end could start a row of its own.
    const shown = io.stdout.isTTY === true ? wrapRows(text, io.stdout.columns) : text;
    lines++;
    // Below this, the echoes of a paste are no longer just above the cursor.
    firstRows = -1;
    if (terminal) {
      // The typed line may take several rows: cleared from its first, and the cursor left as
      // many rows below the message as readline's redraw goes up (it thinks it is still on
      // the row of the input it was on). Cleared from the cursor's row only, the redraw went
      // up into the message and erased it.
      // As drawn: a prompt changed since (showPrompt) is not on the screen yet.
      const rows = drawnRows ?? rl.getCursorPos().rows;
      drawnRows = undefined;
      if (rows > 0) readline.moveCursor(io.stdout, 0, -rows);
      readline.cursorTo(io.stdout, 0);
      readline.clearScreenDown(io.stdout);
      io.stdout.write(`${shown}\n${'\n'.repeat(rows)}`);
      // Not once closed: prompt() resumes the input, and a line shown after Ctrl+D (a server
      // flooding lines) left stdin read for good, so the process never ended.
      // Nor once leaving: no more lines are taken.
      // Nor once the server ended the session: a prompt left below the last line read as if
      // the client still took input.
      if (!inputClosed && !leaving && !ended) rl.prompt(true);
    } else {
      io.stdout.write(`${shown}\n`);
    }
    holdIfBehind();
  };

  /**
   * Lines of the server's events that came while a \join waited for its answer: a member
   * joining the room just after is shown after "You joined", as it happened, not before.
   * Held at most JOIN_HOLD_MS and JOIN_HOLD_LINES.
   */
  let heldLines: string[] | undefined;
  let heldTimer: NodeJS.Timeout | undefined;
  const showHeld = () => {
    clearTimeout(heldTimer);
    const lines = heldLines ?? [];
    heldLines = undefined;
    for (const line of lines) say(line);
  };
  const holdEvents = () => {
    if (heldLines !== undefined) return;
    heldLines = [];
    heldTimer = setTimeout(showHeld, JOIN_HOLD_MS);
    heldTimer.unref();
  };
  const tell = (text: string) => {
    if (heldLines === undefined) say(text);
    else if (heldLines.push(text) >= JOIN_HOLD_LINES) showHeld();
  };

  client.on('chat', (m) => {
    if (!m.whisper) savePositions();
    const action = m.action === true;
    tell(
      m.whisper
        ? view.whisperIn(style, new Date(), m.from, m.msg)
        : m.recovered && m.at !== undefined
          ? view.recovered(
              style,
              new Date(m.at),
              m.from,
              m.msg,
              from(m.room),
              action,
              client.nickname,
            )
          : view.chat(style, new Date(), m.from, m.msg, from(m.room), action, client.nickname),
    );
  });
  /** Stored messages of one room: on joining it, or a page of \\history. */
  const showHistory = (messages: readonly (ChatMessage | HistoryEntry)[], room: string) => {
    for (const m of messages) {
      const at = new Date(m.at ?? Number.NaN);
      const shown = from(room);
      say(
        view.history(
          style,
          at,
          m.from,
          m.msg,
          shown,
          undefined,
          m.action === true,
          client.nickname,
        ),
      );
    }
  };
  /**
   * A room joined by \join or again at start: listed, saved, and shown with what came with
   * it (after `since`, the messages missed come as chats, or a line says what may be missing).
   * `typing`: by \join, which makes it the room typed into, as in IRC.
   */
  const entered = (room: JoinedRoom, since?: Position, typing = false) => {
    joined.add(room.room);
    saveToken();
    if (typing) {
      current = room.room;
      showPrompt();
    }
    // Not through view.info: the line holds the client's own colors, which info would escape.
    say(view.joinedRoom(style, room.room, room.members, typing));
    if (since !== undefined && room.recovered === false) {
      say(view.gap(style, room.room, room.reason));
    }
    showHistory(room.history, room.room);
  };
  /** Rooms whose gap was told with their history, so 'resumed' does not tell it again. */
  const gapTold = new Set<string>();
  // The lobby's last messages at start, and rooms given back after a reconnect.
  client.on('room', (r) => {
    if (r.origin === 'join') return; // the \join command shows them after its own line
    // A session taken back at start brings its rooms with it.
    joined.add(r.room);
    if (r.recovered === false) {
      say(view.gap(style, r.room, r.reason));
      gapTold.add(r.room);
    }
    showHistory(r.history, r.room);
  });
  client.on('gap', (g) => say(view.gap(style, g.room, g.reason)));
  client.on('reconnecting', (r) => {
    if (leaving) return;
    // A long outage is not a screenful of the same line: the first few, then every tenth.
    // Between them the prompt tells that the client is still at it (it said nothing for
    // most of a minute, as if stuck or back).
    if (!offline) {
      offline = true;
      redrawPrompt();
    }
    // The loss itself. The library begins an outage at a first attempt; a connection it
    // restored moments before and lost again is the same outage (the waits go on growing),
    // whose loss is said once, as "lost again", not as a new "Disconnected:" at every cycle.
    if (!r.attemptFailed) {
      flapping = r.attempt > 1;
      if (!flapping && closedWith !== undefined)
        say(view.error(style, `Disconnected: ${closedWith}.`));
      closedWith = undefined;
    }
    // Why, once for each reason in an outage.
    if (r.attempt === 1) toldWhy.clear();
    const why = reconnectReason(r, client.nickname);
    // At most a few: a server could word every refusal differently.
    if (why !== undefined && !toldWhy.has(why) && toldWhy.size < 8) {
      toldWhy.add(why);
      say(view.error(style, why));
    }
    attemptShown = r.attempt <= 3 || r.attempt % 10 === 0;
    if (attemptShown) say(view.reconnecting(style, r.attempt, r.attempts, r.delayMs));
  });
  client.on('session', () => saveToken());
  client.on('stored', () => savePositions());
  /** A line typed and never acknowledged, as it would be typed again (an action with its /me). */
  const sayNotSent = (room: string, chat: { msg: string; action?: true }) => {
    const text = chat.action ? `/me ${chat.msg}` : chat.msg;
    say(view.error(style, `Not sent${room === LOBBY ? '' : ` to ${room}`}: ${text}`));
  };
  /** The operator name granted to this session, if any. */
  let operator: string | undefined;
  client.on('resumed', (r) => {
    offline = false;
    // The end of an outage is said. A server that welcomes and drops every connection gets
    // it said with the attempt's own line only, the same few lines as one that refuses them:
    // the prompt says the state.
    const on = servers.length > 1 ? showServers([client.server]) : undefined;
    if (attemptShown || !flapping) say(view.reconnected(style, r.nickname, r.resumed, on));
    // Operator status lasts as long as its session: a new one starts without it.
    if (!r.resumed && operator !== undefined) {
      say(view.error(style, `You are no longer operator ${operator}: \\oper again.`));
      operator = undefined;
    }
    for (const room of r.rooms) {
      if (room.lost !== undefined) {
        joined.delete(room.room);
        say(view.error(style, `You are no longer in ${room.room}: ${room.lost.message}.`));
        // Typed into it and never acknowledged: the user may want to say them elsewhere.
        for (const chat of room.unsent ?? []) sayNotSent(room.room, chat);
      } else if (!room.recovered && !gapTold.has(room.room)) {
        say(view.gap(style, room.room, room.reason));
      }
    }
    gapTold.clear();
    // Rooms lost in the reconnect are no longer the session's to join again.
    saveToken();
    if (!joined.has(current)) current = LOBBY;
    // At once: the lines above were drawn with the old prompt, and nothing may follow them.
    redrawPrompt();
  });
  client.on('join', (m) =>
    tell(view.join(style, new Date(), m.nickname, m.userCount, from(m.room))),
  );
  client.on('leave', (m) =>
    tell(view.leave(style, new Date(), m.nickname, m.userCount, from(m.room))),
  );
  client.on('rename', (m) => {
    const key = `${m.oldNickname}\n${m.newNickname}`;
    if (key === lastRename) return;
    lastRename = key;
    tell(view.rename(style, new Date(), m.oldNickname, m.newNickname));
  });
  client.on('moderation', (m) => tell(view.info(style, describeModeration(m))));
  client.on('server-error', (e) => {
    // Unasked: a reload ended this session's operator status.
    if (e.code === ErrorCode.NOT_AUTHORIZED && e.ref === undefined) {
      operator = undefined;
      say(view.error(style, sentence(e.message)));
    } else if (e.code < 2000) say(view.error(style, `Refused: ${e.message}.`));
    // A passing reason (shutting down, cut off from its cluster): said with the reconnect
    // lines that follow (see 'reconnecting'). Without reconnecting, the line that says the
    // connection closed gives the reason once.
    else if (e.code >= 3000 && reconnect) closedWith = e.message;
  });

  let lastMessageAt = 0;

  // Lines over the server's flood limit wait in the client's queue; say how
  // many, so a paste that trickles out does not look stuck. On a terminal the
  // prompt carries the count; otherwise one line per backlog, once the paste
  // has been read (so it gives the size, not 1).
  let backlogReported = false;
  const showPrompt = () => {
    drawnRows ??= rl.getCursorPos().rows;
    rl.setPrompt(promptFor());
  };
  /** Shows a changed prompt at once, with what was typed behind it. */
  function redrawPrompt(): void {
    showPrompt();
    if (terminal && !leaving && !inputClosed) {
      rl.prompt(true);
      drawnRows = undefined;
    }
  }
  client.on('queue', (q) => {
    waiting = q.waiting;
    if (terminal) {
      redrawPrompt();
      return;
    }
    if (waiting === 0) backlogReported = false;
    else if (!backlogReported) {
      backlogReported = true;
      setImmediate(() => {
        if (waiting > 0 && !leaving) say(view.queued(style, waiting));
      });
    }
  });

  let result: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    result = resolve;
  });

  client.on('close', ({ error }) => {
    if (leaving) return;
    ended = true;
    let reason = 'The server closed the connection.';
    if (error?.code === ErrorCode.BANNED_WORDS) {
      reason = 'You were disconnected: your message contained a banned word.';
    } else if (error?.code === ErrorCode.KICKED || error?.code === ErrorCode.BANNED) {
      reason = `You were ${error.message}.`;
    } else if (error !== undefined) {
      reason = `You were disconnected: ${error.message}.`;
    } else if (Date.now() - lastMessageAt < BANNED_HINT_WINDOW_MS && client.caps.length === 0) {
      reason =
        'The server closed the connection right after your message (it may contain a banned word).';
    }
    say(view.error(style, reason));
    // Shown as typed, never acknowledged: the user may want to say them again.
    for (const chat of client.unacknowledgedChats()) sayNotSent(chat.room, chat);
    rl.close();
    result(1);
  });

  /** Resolves true once the connection is back ('resumed'), false once the client closed. */
  const backOnline = () =>
    new Promise<boolean>((resolve) => {
      const onResumed = () => {
        client.off('close', onClose);
        resolve(true);
      };
      const onClose = () => {
        client.off('resumed', onResumed);
        resolve(false);
      };
      client.once('resumed', onResumed);
      client.once('close', onClose);
    });

  /**
   * Joins the rooms of a saved session that had ended (pendingRooms), each from the last
   * message seen there: what was said meanwhile follows "You joined" (or a line says what may
   * be missing). A connection lost meanwhile is waited out, and the rest joined after it.
   */
  const rejoin = async (): Promise<void> => {
    let lost = 0;
    for (let entry = pendingRooms[0]; entry !== undefined; entry = pendingRooms[0]) {
      if (leaving || client.isClosed) return;
      const settled = entry;
      const drop = () => {
        pendingRooms = pendingRooms.filter((r) => r !== settled);
      };
      if (known(entry.room) !== undefined) {
        drop();
        continue;
      }
      const since =
        entry.epoch === undefined || entry.id === undefined
          ? undefined
          : { epoch: entry.epoch, id: entry.id };
      holdEvents();
      try {
        const room = await client.join(entry.room, since);
        drop();
        entered(room, since);
      } catch (err) {
        if (!(err instanceof ChatClientError)) throw err;
        if (err.kind === 'closed' || client.isClosed) return;
        if (err.kind === 'reconnecting') {
          if (lost++ < REJOIN_RECONNECTS && (await backOnline())) continue;
          // Left in the file for the next start, and said once.
          if (!client.isClosed) {
            say(
              view.error(
                style,
                `Stopped joining your rooms again after ${REJOIN_RECONNECTS} lost connections: ${pendingRooms.map((r) => r.room).join(', ')}.`,
              ),
            );
          }
          return;
        }
        drop();
        say(view.error(style, `Could not join ${entry.room} again: ${err.message}.`));
      } finally {
        showHeld();
      }
    }
    saveToken();
  };

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
    // A deliberate quit: the session ends, and its token (still a secret, spent or not)
    // has no more use here.
    if (saving) {
      try {
        forgetSession(tokenFile, tokenServer);
      } catch {
        // The file could not be rewritten; nothing better to do on the way out.
      }
    }
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LEAVE_DEADLINE_MS);
    });
    // Behind a backlog of paced lines a reply could take long: drop them instead.
    if (client.waiting === 0) await Promise.race([queue.catch(() => {}), deadline]);
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
  // A kill (SIGTERM) ends the client as it always did, with the rooms' last positions saved
  // first: a new start then repeats nothing already shown. Not SIGHUP: handled, it let the
  // process live on into its closed terminal, where readline's reset of the tty fails (EIO)
  // and ends it before the handler runs; its default action ends it at once, as before.
  const saveAndEnd = (signal: NodeJS.Signals) => {
    saveToken();
    process.off('SIGTERM', saveAndEnd);
    process.kill(process.pid, signal);
  };
  if (saving) {
    process.on('SIGTERM', saveAndEnd);
    void done.finally(() => process.off('SIGTERM', saveAndEnd));
  }
  // The reader of the output went away (`confab chat ann | head`): the client leaves, as
  // for Ctrl+D, where the next line shown (EPIPE, an unhandled 'error') ended the process
  // with a stack trace and no EXIT. Kept on: every later write fails the same way.
  io.stdout.on('error', () => {
    void leave();
  });
  // Only now, with every handler in place, does the user (or a script) learn it is in.
  // Saved first: once the user (or a script) reads that it is in, a new start finds it.
  saveToken();
  say(view.welcome(style, client.serverAddress, client.nickname, client.userCount));
  if (client.motd !== undefined) say(view.motd(style, client.motd));
  if (saved !== undefined && !client.resumedAtConnect) {
    // A saved session not taken back: its client stopped (even killed, it closed its
    // connection, and the server let the session go at once), or the server restarted.
    // Its rooms are joined again, as a reconnect does, each from the last message seen.
    const ended =
      'The session your last run left had already ended on the server, so this is a new one';
    const names = pendingRooms.slice(0, REJOIN_NAMES_SHOWN).map((r) => r.room);
    const more = pendingRooms.length - names.length;
    say(
      view.info(
        style,
        pendingRooms.length === 0
          ? `${ended}.`
          : `${ended}; joining its rooms again: ${names.join(', ')}${more > 0 ? ` and ${more} more` : ''}.`,
      ),
    );
    if (pendingRooms.length > 0) {
      const rejoined = rejoin().catch((err: unknown) => {
        say(view.error(style, `Could not join your rooms again: ${String(err)}.`));
      });
      // Lines typed meanwhile wait for the rooms (a \room to one of them then finds it), but
      // no longer than for any reply: the joins go on, and the lines with them.
      queue = queue.then(() =>
        Promise.race([
          rejoined,
          new Promise<void>((resolve) => setTimeout(resolve, REPLY_DEADLINE_MS).unref()),
        ]),
      );
    }
  }
  // Said once the rooms taken back are here, so that what is typed after it finds them;
  // lines typed before it wait in the queue behind it.
  if (client.resumedAtConnect) {
    queue = client.welcomed.then((welcomed) => {
      // Lost meanwhile: what the reconnect says follows instead.
      if (welcomed) say(view.tookBack(style, client.nickname));
    });
  }

  const handle = async (
    line: string,
    unanswered: Unanswered,
    echo: number,
    echoRows: number,
  ): Promise<void> => {
    const command = parseCommand(line);
    const now = new Date();
    const max = client.limits?.maxMessage;
    if (
      (command.kind === 'chat' || command.kind === 'action' || command.kind === 'whisper') &&
      max !== undefined
    ) {
      const refused = tooLongToSend(command.text, max);
      if (refused !== undefined) {
        say(view.error(style, refused));
        return;
      }
    }
    try {
      switch (command.kind) {
        case 'empty':
          return;
        case 'chat':
        case 'action': {
          const action = command.kind === 'action';
          if (action && !client.hasActions) {
            say(view.error(style, NO_ACTIONS));
            return;
          }
          if (terminal && lines === echo && echoRows > 0) {
            // Replace the echoed input line, all of its rows, with the formatted message.
            // Cleared from its last row only, a line wider than the terminal left its first
            // rows on the screen above the message, cut off.
            readline.moveCursor(io.stdout, 0, -echoRows);
            readline.cursorTo(io.stdout, 0);
            readline.clearScreenDown(io.stdout);
          }
          lastMessageAt = Date.now();
          client.chat(command.text, current, action);
          const said = view.chat(style, now, client.nickname, command.text, undefined, action);
          // Typed while the connection is down, it waits in the client: shown as said, it
          // read as if the others had it already.
          say(
            offline
              ? `${said} ${view.info(style, '(waiting for the connection: sent once it is back)')}`
              : said,
          );
          return;
        }
        case 'whisper':
          lastMessageAt = Date.now();
          await client.whisper(command.to, command.text);
          say(view.whisperOut(style, now, command.to, command.text));
          return;
        case 'users': {
          const room = command.room === undefined ? current : (known(command.room) ?? command.room);
          const users = (await client.users(room)) as UserEntry[];
          say(view.users(style, users, command.room === undefined ? undefined : room));
          return;
        }
        case 'join': {
          // As in the web app: said, and typed into from now on.
          const typeInto = (room: string) => {
            current = room;
            showPrompt();
            say(view.info(style, `You are already in ${room}; typing there now.`));
          };
          const already = known(command.room);
          if (already !== undefined) {
            typeInto(already);
            return;
          }
          holdEvents();
          try {
            const room = await client.join(command.room).catch((err: unknown) => {
              // A look-alike spelling of a room it is in ("Physics", a Cyrillic "а"), which
              // only the server tells: its 1016 names the room.
              if (!(err instanceof ChatClientError) || err.code !== ErrorCode.ALREADY_IN_ROOM) {
                throw err;
              }
              const named = known(err.room ?? '');
              if (named === undefined) throw err;
              return named;
            });
            if (typeof room === 'string') {
              typeInto(room);
              return;
            }
            // Not once the line saying there was no answer was shown: the lines typed since went
            // to the room typed into, and the user was told to expect nothing.
            entered(room, undefined, !unanswered.told());
          } finally {
            showHeld();
          }
          return;
        }
        case 'history': {
          if (!client.hasHistory) {
            say(view.error(style, 'This server keeps no history.'));
            return;
          }
          const page = await client.history(current, undefined, command.count);
          if (page.messages.length === 0) {
            say(view.info(style, `No earlier messages in ${page.room}.`));
            return;
          }
          say(view.info(style, `Earlier in ${page.room}:`));
          showHistory(page.messages, page.room);
          if (!page.more) say(view.info(style, `That is the beginning of ${page.room}.`));
          return;
        }
        case 'part': {
          const refused = partRefused(command, (room) => known(room) !== undefined);
          if (refused !== undefined) {
            say(view.error(style, refused));
            return;
          }
          const name = command.room ?? current;
          if (name === LOBBY && client.hasRooms) {
            say(view.error(style, 'Everyone stays in the lobby; \\exit leaves the server.'));
            return;
          }
          const room = await client.part(known(name) ?? name);
          joined.delete(room);
          saveToken();
          say(view.info(style, `You left ${room}.`));
          if (command.reason !== undefined) say(view.info(style, NO_PART_REASON));
          if (room === current) {
            current = LOBBY;
            showPrompt();
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
            showPrompt();
            say(view.info(style, `You are typing into ${room}.`));
          }
          return;
        }
        case 'rename': {
          const name = await client.rename(command.nickname);
          // Saved under the new name: that is the one a new start is given.
          saveToken();
          showPrompt();
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
        case 'oper':
          operator = await client.oper(command.name, command.password);
          say(view.info(style, `You are now operator ${operator}.`));
          return;
        case 'kick':
          client.kick(command.nickname, command.reason);
          return;
        case 'ban':
        case 'unban':
        case 'bans': {
          let said: string | undefined;
          let unsaved: string | undefined;
          let list: BanEntry[];
          if (command.kind === 'unban') {
            const answer = await client.unban(command.mask);
            said = describeUnban(command.mask, answer.removed);
            ({ bans: list, unsaved } = answer);
          } else if (command.kind === 'ban') {
            ({ bans: list, unsaved } = await client.ban(
              command.mask,
              command.seconds,
              command.reason,
            ));
          } else list = await client.bans();
          const lines = banListLines(list).map((line) => view.info(style, line));
          if (said !== undefined) lines.unshift(view.info(style, said));
          // Last, where it is read: the change shown above does not outlive a restart.
          if (unsaved !== undefined) lines.push(view.error(style, sentence(unsaved)));
          say(lines.join('\n'));
          return;
        }
        case 'exit': // handled before the queue, so it never waits
          return;
        case 'invalid':
          say(view.error(style, command.message));
          return;
      }
    } catch (err) {
      if (!(err instanceof ChatClientError)) throw err;
      // The close handler explains, also a refusal that failed this line's call with it (a
      // banned word in a whisper was told twice, the second time in the server's words).
      if (err.kind === 'closed' || client.isClosed) return;
      if (err.kind === 'unanswered') {
        unanswered();
        return;
      }
      if (err.kind === 'reconnecting') {
        say(view.error(style, 'Not connected right now; try again once reconnected.'));
        return;
      }
      if (
        err.kind === 'nickname-taken' &&
        command.kind === 'rename' &&
        command.nickname.toLowerCase() === client.nickname.toLowerCase()
      ) {
        // Taken by oneself: the server counts names that differ in letter case as one.
        say(
          view.error(
            style,
            `"${command.nickname}" is your own nickname to the server, which does not tell letter case apart.`,
          ),
        );
      } else if (err.kind === 'nickname-taken' && command.kind === 'rename') {
        say(view.error(style, `The nickname "${command.nickname}" is taken.`));
      } else if (err.kind === 'no-such-user' && command.kind === 'whisper') {
        say(view.error(style, `There is no user named "${command.to}".`));
      } else if (err.kind === 'whisper-to-self') {
        say(view.error(style, "You can't whisper to yourself."));
      } else if (
        err.code === ErrorCode.NOT_IN_ROOM &&
        (command.kind === 'part' || command.kind === 'users')
      ) {
        say(view.error(style, `You are not in ${command.room ?? current}.`));
      } else if (err.kind === 'not-supported') {
        say(view.error(style, 'This server does not support rooms.'));
      } else {
        say(view.error(style, err.message));
      }
    }
  };

  /**
   * Says, once, that the server did not answer `line`: when its deadline passes, and when the
   * client learns the reply will never come (whichever is first; the client learns it after
   * as long).
   */
  const noAnswer = (line: string): Unanswered => {
    let said = false;
    const tell = () => {
      if (said || leaving) return;
      said = true;
      // The command word only: the rest may be a password (\oper).
      const word = line.trimStart().split(/\s/, 1)[0] ?? '';
      say(
        view.error(
          style,
          `No answer from the server to ${word} after ${REPLY_DEADLINE_MS / 1000} s; going on with the next lines.`,
        ),
      );
    };
    return Object.assign(tell, { told: () => said });
  };

  /**
   * `handling`, or nothing once REPLY_DEADLINE_MS have passed without it
   * ending: the next lines go on, and a reply that comes later is still shown.
   */
  const withinDeadline = (unanswered: () => void, handling: Promise<void>): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(function expire() {
        // Lines held back by the client's own flood queue are not the server's delay:
        // the request may not be sent yet, so its time starts again.
        if (client.waiting > 0) {
          timer = setTimeout(expire, REPLY_DEADLINE_MS);
          timer.unref();
          return;
        }
        unanswered();
        resolve();
      }, REPLY_DEADLINE_MS);
      timer.unref();
    });
    return Promise.race([handling, late]).finally(() => clearTimeout(timer));
  };

  /**
   * The rows the input line took on the screen when Enter was pressed: a chat's echo is that
   * many rows. Measured before readline handles the key, with the cursor moved to the line's
   * end as readline moves it then. A last row the text fills exactly is not counted (the
   * terminal may have wrapped it or not): a row too few leaves a blank row, a row too many
   * would erase the line above.
   */
  let enterRows = 1;
  if (terminal) {
    io.stdin.prependListener('keypress', (_text: string | undefined, key?: readline.Key) => {
      if (key?.name !== 'return' && key?.name !== 'enter') return;
      rl.write(null, { name: 'end' });
      const at = rl.getCursorPos();
      enterRows = at.rows + (at.cols > 0 ? 1 : 0);
    });
  }
  // Documented for this: a listener may take a line (here a password) out of the history.
  rl.on('history', (history) => {
    if (history[0] !== undefined && parseCommand(history[0]).kind === 'oper') history.shift();
  });
  /**
   * Lines that come in one turn of the event loop were pasted: their echoes are on the rows
   * just above the cursor, one after the other, and only the last could be replaced by its
   * formatted message, so a pasted page showed twice, raw and then formatted. From the
   * second line of a paste on, the echoes of its chats (and empty lines) are erased as they
   * come, the first one's with them; a line of any other kind ends that for the paste.
   * `firstRows` (declared with `say`, which sets it to -1): the rows of the paste's first
   * echo while it is still shown, -1 when nothing more is erased in this paste. Returns the
   * rows of this line's echo its handling is to replace: none once erased here.
   */
  const pasted = (kind: string, rows: number): number => {
    const plain = kind === 'chat' || kind === 'empty';
    if (!pasteTurn) {
      pasteTurn = true;
      firstRows = plain ? rows : -1;
      setImmediate(() => {
        pasteTurn = false;
      });
      return rows;
    }
    if (!plain || firstRows < 0) {
      firstRows = -1;
      return rows;
    }
    readline.moveCursor(io.stdout, 0, -(rows + firstRows));
    readline.cursorTo(io.stdout, 0);
    readline.clearScreenDown(io.stdout);
    firstRows = 0;
    return 0;
  };
  rl.on('line', (line) => {
    if (leaving) return;
    const exit = parseCommand(line);
    if (exit.kind === 'exit') {
      // Leaving first: the notice is then drawn with no prompt after it.
      void leave();
      if (exit.message !== undefined) say(view.info(style, NO_QUIT_MESSAGE));
      return;
    }
    const echo = ++lines;
    const rows = enterRows;
    enterRows = 1;
    const command = parseCommand(line);
    const replaceRows = terminal ? pasted(command.kind, rows) : rows;
    if (command.kind === 'oper' && terminal) {
      // The password is not left on the screen (nor, below, in the lines Up recalls).
      readline.moveCursor(io.stdout, 0, -rows);
      readline.cursorTo(io.stdout, 0);
      readline.clearScreenDown(io.stdout);
      io.stdout.write(`${rl.getPrompt()}\\oper ${command.name} ********\n`);
    }
    queue = queue.then(() => {
      const unanswered = noAnswer(line);
      return withinDeadline(unanswered, handle(line, unanswered, echo, replaceRows));
    });
  });
  rl.on('SIGINT', () => void leave());
  // Back from Ctrl+Z (fg): readline pauses its input then and leaves it to this event to
  // go on. Without a listener the client read nothing more, Ctrl+C included, for good.
  rl.on('SIGCONT', () => {
    if (!inputClosed) rl.resume();
  });
  rl.on('close', () => {
    // Piped input (`confab chat ann < notes.txt`) ends as soon as it is read:
    // let its lines go out first. Ctrl+D at a terminal leaves at once.
    if (terminal || leaving) {
      void leave();
      return;
    }
    void queue
      .catch(() => {})
      .then(() => client.drained())
      .then(() => leave());
  });
  if (terminal) rl.prompt();
  return done;
}
