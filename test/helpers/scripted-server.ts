import net from 'node:net';

/** A request as a scripted server reads it: whatever the client sent, unchecked. */
export interface ScriptedRequest {
  cmd: string;
  msg?: string;
  beginTime?: number;
}

export interface ScriptedServer {
  port: number;
  /** Every request received, in order. */
  requests: ScriptedRequest[];
  close(): Promise<void>;
}

/**
 * A server on 127.0.0.1 that the test scripts, speaking confab's line framing (one JSON
 * value a line): `answer` sees each request and replies with `send`. For a client against
 * servers confab is not: hostile ones, ones that lose replies.
 */
export async function scriptedServer(
  answer: (request: ScriptedRequest, send: (value: object) => void, socket: net.Socket) => void,
): Promise<ScriptedServer> {
  const sockets = new Set<net.Socket>();
  const requests: ScriptedRequest[] = [];
  const srv = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const send = (value: object) => socket.write(`${JSON.stringify(value)}\n`);
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const request = JSON.parse(line) as ScriptedRequest;
        requests.push(request);
        answer(request, send, socket);
      }
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as net.AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

/** The "03" a scripted server welcomes a client with, granting `caps` (none: the course protocol). */
export function welcome(caps?: string[]): object {
  return {
    cmd: '03',
    serverAddress: ['127.0.0.1', 1],
    userCount: 1,
    ...(caps === undefined ? {} : { caps }),
  };
}

/**
 * A server that joins the client (granting `caps`; none: the course protocol), answers
 * RTT, and leaves USERS unanswered, all of them or those before the `answerFrom`-th: a
 * hostile server, or an honest one that lost the reply (a reply over the client's frame
 * limit is dropped, and its call stays pending).
 */
export function silentOnUsers(
  options: { caps?: string[]; answerFrom?: number } = {},
): Promise<ScriptedServer> {
  let users = 0;
  return scriptedServer((request, send, socket) => {
    if (request.cmd === '0') {
      send(welcome(options.caps));
    } else if (request.cmd === '6') send({ cmd: '60', beginTime: request.beginTime });
    else if (request.cmd === '3') socket.end();
    else if (
      request.cmd === '1' &&
      options.answerFrom !== undefined &&
      ++users >= options.answerFrom
    )
      send({ cmd: '10', users: [['ann', '127.0.0.1', users]] });
  });
}
