import { describe, expect, it } from 'vitest';
import { MAX_BAN_REASON, MAX_BANS } from '../../src/core/moderation-commands.js';
import { ErrorCode } from '../../src/protocol/codes.js';
import { useOperatorServer } from '../helpers/operator-server.js';
import { join } from '../helpers/raw-client.js';

const web = useOperatorServer();

describe('the ban list an operator builds', () => {
  it('is bounded in count and reason length, and its "98" keeps reaching the operator', async () => {
    const op = await join(web.server.address.port, 'op', { caps: ['errors', 'moderation'] });
    web.clients.push(op);
    op.sendPy({ cmd: '92', name: 'teacher', password: 'sesame' });
    expect(await op.expect('93')).toEqual({ cmd: '93', name: 'teacher' });
    // A reason of --max-message characters (4096), each escaped to six bytes in JSON, would
    // make each ban about 24 KB of every "98": 43 of them passed --max-queue (1 MiB).
    op.sendPy({ cmd: '95', mask: 'spammer', reason: '\u0001'.repeat(4096) });
    expect(await op.expect('90')).toMatchObject({ code: ErrorCode.MESSAGE_TOO_LONG, ref: '95' });
    // The list fills to MAX_BANS (each answered with the whole list, so one at a time, as
    // an operator would), then a ban on a new mask is refused. The longest list there can
    // be is measured in unit/core/moderation.
    for (let i = 0; i < MAX_BANS; i++) {
      op.sendPy({ cmd: '95', mask: `spammer${i}`, reason: 'spam' });
      await op.expect('98');
    }
    op.sendPy({ cmd: '95', mask: 'one-more', reason: '\u0001'.repeat(MAX_BAN_REASON) });
    expect(await op.expect('90')).toMatchObject({ code: ErrorCode.TOO_MANY_BANS, ref: '95' });
    // The operator was not cut off for asking: BANS still answers, on the same connection.
    op.sendPy({ cmd: '97' });
    const list = (await op.expect('98')) as { bans?: unknown[] };
    expect(list.bans).toHaveLength(MAX_BANS);
    expect(op.isClosed).toBe(false);
  }, 60_000);
});
