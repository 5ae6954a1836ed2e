import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Cmd, ErrorCode } from '../../src/protocol/codes.js';
import type { ConfabServer } from '../../src/server.js';
import { join, RawClient } from '../helpers/raw-client.js';
import { startConfab } from '../helpers/servers.js';

let server: ConfabServer;
let port: number;
const clients: RawClient[] = [];

async function open(): Promise<RawClient> {
  const c = await RawClient.open(port);
  clients.push(c);
  return c;
}

async function member(nickname: string, extra: object = {}): Promise<RawClient> {
  const c = await join(port, nickname, extra);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  server = await startConfab();
  port = server.address.port;
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.stop();
});

const CYRILLIC_PAYPAL = 'p\u0430ypal';

describe('look-alike nicknames on a running server', () => {
  it('refuses a look-alike of a present member at CONNECT with "01"', async () => {
    await member('paypal');
    for (const name of [CYRILLIC_PAYPAL, 'ＰＡＹＰＡＬ', '𝐩𝐚𝐲𝐩𝐚𝐥', 'PayPaI', 'pay\u200bpal']) {
      const c = await open();
      c.sendPy({ cmd: '0', nickname: name });
      expect(await c.expect(Cmd.CONNECT_DUPLICATE_NICKNAME)).toEqual({ cmd: '01' });
      await c.expectClose();
    }
  });

  it('refuses a rename to a look-alike of another member with "50"', async () => {
    await member('paypal');
    const bob = await member('bob');
    bob.sendPy({ cmd: '5', newNickname: CYRILLIC_PAYPAL });
    expect(await bob.expect(Cmd.RENAME_DUPLICATE_NICKNAME)).toEqual({ cmd: '50' });
    bob.sendPy({ cmd: '5', newNickname: 'rnary' });
    await bob.expect(Cmd.RENAME_SUCCESS);
    const mary = await open();
    mary.sendPy({ cmd: '0', nickname: 'Mary' });
    await mary.expect(Cmd.CONNECT_DUPLICATE_NICKNAME);
  });

  it('delivers a whisper addressed to a look-alike spelling to the real member', async () => {
    const paypal = await member('paypal');
    const bob = await member('bob');
    await paypal.expect(Cmd.NEW_USER_ENTERS);
    bob.sendPy({ cmd: '2', to: CYRILLIC_PAYPAL, msg: 'psst' });
    expect(await bob.expect(Cmd.WHISPER_SUCCESS)).toEqual({ cmd: '22' });
    expect(await paypal.expect(Cmd.CHAT_RESPONSE)).toEqual({
      cmd: '70',
      from: 'bob',
      msg: 'psst',
    });
  });

  it('refuses invisible names: "01" for course clients, 1006 for opted-in ones', async () => {
    const legacy = await open();
    legacy.sendPy({ cmd: '0', nickname: '\u3164' });
    expect(await legacy.expect(Cmd.CONNECT_DUPLICATE_NICKNAME)).toEqual({ cmd: '01' });
    await legacy.expectClose();

    const modern = await open();
    modern.sendPy({ cmd: '0', nickname: 'ann\ufe0f', caps: ['errors'] });
    const error = await modern.expect(Cmd.ERROR);
    expect(error.code).toBe(ErrorCode.INVALID_NICKNAME);
    await modern.expectClose();

    // The plain name is still free: the refused ones never registered.
    await member('ann');
  });
});
