/**
 * Identities: who holds each resume token, identity and origin. The sessions here are bare
 * records of the four fields it reads and writes.
 */
import { describe, expect, it } from 'vitest';
import { Identities } from '../../../src/core/identities.js';
import { newSender, newToken, senderOf } from '../../../src/core/resume-token.js';
import type { Session } from '../../../src/core/session.js';

function session(): Session {
  return {
    resumeToken: undefined,
    sender: undefined,
    origin: undefined,
    successor: undefined,
  } as unknown as Session;
}

const originOf = (sender: string) => `o:${sender}`;

describe('Identities', () => {
  it('issues tokens that carry the session identity, and only the last one takes it back', () => {
    const ids = new Identities();
    const s = session();
    const first = ids.issue(s);
    const second = ids.issue(s);
    expect(senderOf(first)).toBe(s.sender);
    expect(senderOf(second)).toBe(s.sender);
    expect(ids.holder(first)).toBeUndefined();
    expect(ids.holder(second)).toBe(s);
    expect(s.resumeToken).toBe(second);
    expect(s.origin).toBeUndefined();
  });

  it('names the identity of a spent token only once no open session holds it', () => {
    const ids = new Identities();
    const s = session();
    const token = ids.issue(s);
    ids.spend(s);
    expect(ids.holder(token)).toBeUndefined();
    expect(ids.namedBy(token)).toBeUndefined();
    ids.forget(s);
    expect(ids.namedBy(token)).toBe(s.sender);
    expect(ids.namedBy('not a token')).toBeUndefined();
  });

  it('finds a chat by its origin, following takeovers, on a cluster', () => {
    const ids = new Identities(originOf);
    const old = session();
    ids.issue(old);
    expect(old.origin).toBe(originOf(old.sender!));
    const next = session();
    old.successor = next;
    expect(ids.sentBy(old.origin)).toBe(next);
    expect(ids.sentBy(undefined)).toBeUndefined();
    expect(ids.sentBy('o:nobody')).toBeUndefined();
  });

  it('gives a session an origin before its first chat, and keeps it', () => {
    const ids = new Identities(originOf);
    const s = session();
    ids.originate(s);
    const origin = s.origin;
    expect(origin).toBe(originOf(s.sender!));
    ids.originate(s);
    expect(s.origin).toBe(origin);
    expect(new Identities().sizes).toEqual({ tokens: 0, senders: 0, origins: 0 });
    const single = new Identities();
    single.originate(s);
    expect(single.sizes.origins).toBe(0);
  });

  it('moves an identity to the session that takes it, and forgets only what a session holds', () => {
    const ids = new Identities(originOf);
    const a = session();
    const b = session();
    ids.identify(a, newSender());
    const shared = newSender();
    ids.identify(a, shared);
    ids.identify(b, shared);
    // a's first origin is gone with its identity; the shared one is b's.
    expect(ids.sizes.origins).toBe(1);
    expect(ids.sentBy(originOf(shared))).toBe(b);
    ids.forget(a);
    expect(ids.sentBy(originOf(shared))).toBe(b);
    ids.keep(b, newToken(shared), shared);
    ids.forget(b);
    expect(ids.sizes).toEqual({ tokens: 0, senders: 0, origins: 0 });
  });
});
