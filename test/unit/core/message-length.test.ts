import { describe, expect, it } from 'vitest';
import { Chat } from '../../../src/core/chat.js';
import { ErrorCode } from '../../../src/protocol/codes.js';
import { joinChat as connect, sendRequest as send } from '../../helpers/fake-peer.js';

/**
 * --max-message and the 64 of a cid count characters, as the docs say: an emoji is one,
 * though a JavaScript string (and JSON's \u escapes) hold it as two units.
 */
describe('lengths in characters', () => {
  it('take a chat or whisper of --max-message emoji, and refuse one more', () => {
    const chat = new Chat({ maxUsers: 10, maxMessage: 100 });
    const eve = connect(chat, 'eve', ['errors']);
    const ann = connect(chat, 'ann', ['errors']);
    eve.take();
    ann.take();
    const hundred = '😀'.repeat(100);
    send(eve, { cmd: '7', msg: hundred });
    send(eve, { cmd: '2', to: 'ann', msg: hundred });
    expect(eve.take()).toEqual([{ cmd: '22' }]);
    expect(ann.take()).toMatchObject([
      { cmd: '70', from: 'eve', msg: hundred },
      { cmd: '70', from: 'eve', msg: hundred },
    ]);
    send(eve, { cmd: '7', msg: `${hundred}😀` });
    send(eve, { cmd: '2', to: 'ann', msg: `${hundred}a` });
    expect(eve.take()).toMatchObject([
      { cmd: '90', code: ErrorCode.MESSAGE_TOO_LONG },
      { cmd: '90', code: ErrorCode.MESSAGE_TOO_LONG },
    ]);
    expect(ann.take()).toEqual([]);
  });
});
