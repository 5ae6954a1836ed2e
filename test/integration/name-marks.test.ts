import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from '../helpers/raw-client.js';
import { type SpawnedServer, spawnServer } from '../helpers/spawn-server.js';

/**
 * NFC sorts a run of combining marks in time by the square of its length, so
 * a name longer than any spelling of a name people may take, or with more
 * marks in a row than one, is refused before it is normalised (what reaches
 * the normaliser is counted in unit/core/lookup-marks). Over the wire, a
 * course client's RENAME of such a name, escaped by json.dumps into a frame of
 * 60 KB, is refused as the course protocol refuses a name, and the client
 * goes on.
 */

let server: SpawnedServer;

beforeEach(async () => {
  server = await spawnServer(['--max-users', '20']);
});

afterEach(async () => {
  await server.stop();
});

describe('names of long runs of combining marks', () => {
  it('a course client refused such a name still renames and is seen by the course protocol', async () => {
    const eve = await join(server.port, 'eve');
    // As the course client sends: json.dumps escapes every mark (6 bytes each), 10,000 of them.
    eve.sendPy({ cmd: '5', newNickname: `a${'\u0301\u0316'.repeat(5_000)}` });
    expect(await eve.expect('50', 30_000)).toEqual({ cmd: '50' });
    eve.sendPy({ cmd: '5', newNickname: 'eva' });
    expect(await eve.expect('51')).toEqual({ cmd: '51', newNickname: 'eva' });
    eve.close();
  });
});
