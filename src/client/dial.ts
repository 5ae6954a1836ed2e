/**
 * Opening a connection to a chat server and getting through its CONNECT: the part of the
 * client that runs before there is a session, and the errors every call can end with.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Cmd, mayReconnect } from '../protocol/codes.js';
import { asNumber, asString } from '../protocol/coerce.js';
import { FrameDecoder } from '../protocol/frame-decoder.js';
import { type ParsedServerMessage, parseServerText } from '../protocol/message-codec.js';
import type { ConnectRequest } from '../protocol/messages.js';
import { encodeRequest } from '../protocol/request-codec.js';

export type ChatErrorKind =
  | 'nickname-taken'
  | 'room-full'
  | 'no-such-user'
  | 'whisper-to-self'
  | 'refused'
  | 'timeout'
  | 'unanswered'
  | 'closed'
  | 'certificate'
  | 'server-error'
  /** The server did not grant what the call needs (rooms, against the course server). */
  | 'not-supported'
  /** The connection was lost and the client is getting it back; try again once 'resumed' fires. */
  | 'reconnecting';

/** Every way a client call can fail, told apart by `kind`. */
export class ChatClientError extends Error {
  override name = 'ChatClientError';
  constructor(
    readonly kind: ChatErrorKind,
    message: string,
    /** The "90" error code, for kind "server-error" and server-initiated closes. */
    readonly code?: number,
    options?: { cause?: unknown; room?: string },
  ) {
    super(message, options);
    this.room = options?.room;
  }

  /** The room a "90" names (1016: the room joined already, by its name as the server has it). */
  readonly room: string | undefined;
}

export interface TlsOptions {
  /** PEM certificates to trust instead of the system's (a self-signed server's own). */
  ca?: string | Buffer | (string | Buffer)[];
  /** The name the certificate must be for, and the SNI sent (default: host). */
  servername?: string;
  /** false skips verification. Default: true. */
  rejectUnauthorized?: boolean;
}

/** OpenSSL's and Node's codes for a certificate the client will not trust. */
const CERTIFICATE_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const DEFAULT_MAX_FRAME = 1024 * 1024;
export const utf8 = new TextDecoder();

export interface Endpoint {
  host: string;
  port: number;
  tls: TlsOptions | undefined;
  timeoutMs: number;
}

/**
 * The longest reason of a server's (a "90"'s message, a "99"'s reason) a client passes on;
 * past it, cut with "…". confab's longest, a kick's reason, is at most --max-message (4,096
 * by default); a hostile server's megabyte reason, shown at every reconnect, was a screenful.
 */
export const SERVER_TEXT_MAX = 4096;

/** A server's reason as text, at most SERVER_TEXT_MAX characters (see there). */
export function serverText(value: unknown): string {
  const text = asString(value);
  return text.length > SERVER_TEXT_MAX ? `${text.slice(0, SERVER_TEXT_MAX)}…` : text;
}

/**
 * Opens a connection and sends `request` (a CONNECT). On "03", `welcome`
 * runs at once (later frames of the same read go where it says) and the
 * promise resolves; anything else rejects with the reason.
 */
export function dial(
  to: Endpoint,
  request: ConnectRequest,
  welcome: (socket: net.Socket, message: ParsedServerMessage) => (frame: Uint8Array) => void,
): Promise<void> {
  const { host, port } = to;
  const secure = to.tls;
  return new Promise((resolve, reject) => {
    const socket: net.Socket =
      secure === undefined
        ? net.connect({ host, port, noDelay: true })
        : tls
            .connect({
              host,
              port,
              ca: secure.ca,
              // SNI is for names only; an address is checked against the certificate's IP entries.
              servername: secure.servername ?? (net.isIP(host) === 0 ? host : undefined),
              rejectUnauthorized: secure.rejectUnauthorized ?? true,
            })
            .setNoDelay(true);
    let sink: ((frame: Uint8Array) => void) | undefined;
    let settled = false;
    // A frame over the limit is skipped to its end and dropped, like any
    // frame this client cannot read: resetting the decoder instead would
    // resume inside it, where a message's text could pose as a frame.
    // Nothing is emitted; a call whose reply it was stays pending until
    // the connection closes. Before joining it fails the connect, as the
    // welcome cannot be that large.
    const decoder = new FrameDecoder(
      DEFAULT_MAX_FRAME,
      {
        frame: (frame) => {
          if (sink !== undefined) sink(frame);
          else handshake(frame);
        },
        refused: (reason) => {
          if (sink === undefined && reason === 'too-large')
            fail(new ChatClientError('closed', 'reply too large'));
        },
      },
      { oversize: 'skip' },
    );
    const fail = (error: ChatClientError) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new ChatClientError('timeout', `no answer from ${host}:${port}`)),
      to.timeoutMs,
    );
    timer.unref();
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const kind =
        err.code === 'ECONNREFUSED'
          ? 'refused'
          : CERTIFICATE_ERRORS.has(err.code ?? '')
            ? 'certificate'
            : 'closed';
      const text =
        kind === 'refused'
          ? `connection refused by ${host}:${port}`
          : kind === 'certificate'
            ? `the server's certificate is not trusted: ${err.message}`
            : `connection failed: ${err.message}`;
      fail(new ChatClientError(kind, text, undefined, { cause: err }));
    });
    socket.once('close', () =>
      fail(new ChatClientError('closed', 'the server closed the connection before joining')),
    );
    // Over TLS, CONNECT waits for the handshake, so no nickname goes to an unverified server.
    socket.once(secure === undefined ? 'connect' : 'secureConnect', () => {
      socket.write(encodeRequest(request));
    });
    const handshake = (frame: Uint8Array) => {
      if (settled) return;
      const message = parseServerText(utf8.decode(frame));
      if (message === undefined) return;
      switch (message.cmd) {
        case Cmd.CONNECT_SUCCESS: {
          settled = true;
          clearTimeout(timer);
          socket.removeAllListeners('error');
          socket.removeAllListeners('close');
          socket.on('error', () => {});
          sink = welcome(socket, message);
          resolve();
          return;
        }
        case Cmd.CONNECT_DUPLICATE_NICKNAME:
          return fail(
            new ChatClientError('nickname-taken', `the nickname "${request.nickname}" is taken`),
          );
        case Cmd.CONNECT_CHATROOM_FULL:
          return fail(new ChatClientError('room-full', 'the chat room is full'));
        case Cmd.ERROR:
          return fail(
            new ChatClientError(
              'server-error',
              serverText(message.message ?? 'refused'),
              asNumber(message.code),
            ),
          );
      }
    };
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      // A welcome that never ends would otherwise read as no answer at the deadline.
      if (sink === undefined && decoder.skippingOversize)
        fail(new ChatClientError('closed', 'reply too large'));
    });
  });
}

/** The server could not be reached, or refused for a passing reason (it is shutting down, cut off from its cluster). */
export function unreachable(error: ChatClientError): boolean {
  switch (error.kind) {
    case 'refused':
    case 'timeout':
    case 'closed':
      return true;
    case 'server-error':
      return error.code !== undefined && mayReconnect(error.code);
    default:
      return false;
  }
}

/**
 * Failures worth another attempt: those of `unreachable`, a full room, a nickname still held
 * by our ghost, and a refusal that gives no code.
 */
export function retryable(error: ChatClientError): boolean {
  if (unreachable(error)) return true;
  switch (error.kind) {
    case 'room-full':
    case 'nickname-taken':
      return true;
    case 'server-error':
      return error.code === undefined;
    default:
      return false;
  }
}
