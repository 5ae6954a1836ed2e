import { newSender, newToken, senderOf } from './resume-token.js';
import { holderOf, type Session } from './session.js';

/**
 * Which open session holds each resume token and each lasting identity
 * (MessageDraft.sender) on this server, and on a cluster which one sent the
 * chats whose origin (ChatEvent.origin) it makes. A session is in these
 * maps from its first token, or its first chat on a cluster, until it ends.
 */
export class Identities {
  /** Resume tokens of open sessions with "history". */
  private readonly tokens = new Map<string, Session>();
  /** The session holding each sender its tokens carry, for `namedBy`. */
  private readonly senders = new Map<string, Session>();
  /**
   * On a cluster, sessions by origin: a chat the broker hands back is not shown to the
   * session that sent it, nor to the one that took it over since, here or (with its resume
   * token) on another node.
   */
  private readonly origins = new Map<string, Session>();

  /** `originOf` is given on a cluster only: what a chat carries of its sender. */
  constructor(private readonly originOf?: (sender: string) => string) {}

  /** The open session `token` takes back, if any. */
  holder(token: string): Session | undefined {
    return this.tokens.get(token);
  }

  /** A new token for `session`, carrying its identity (made now if it has none). */
  issue(session: Session): string {
    const sender = session.sender ?? this.identify(session, newSender());
    const token = newToken(sender);
    this.keep(session, token, sender);
    return token;
  }

  /** `token`, which carries `sender`, is `session`'s from now on (its last one no longer). */
  keep(session: Session, token: string, sender: string): void {
    if (session.resumeToken !== undefined) this.tokens.delete(session.resumeToken);
    session.resumeToken = token;
    this.tokens.set(token, session);
    this.senders.set(sender, session);
  }

  /** `session`'s token takes it back no more (it was taken over with it). */
  spend(session: Session): void {
    if (session.resumeToken !== undefined) this.tokens.delete(session.resumeToken);
    session.resumeToken = undefined;
  }

  /**
   * Gives `session` its lasting identity; on a cluster, the chats whose origin it makes
   * are this session's from now on.
   */
  identify(session: Session, sender: string): string {
    session.sender = sender;
    if (this.originOf !== undefined) {
      const origin = this.originOf(sender);
      // An identity it had before is no longer its: the map would keep the session for good.
      const before = session.origin;
      if (before !== undefined && before !== origin && this.origins.get(before) === session) {
        this.origins.delete(before);
      }
      session.origin = origin;
      this.origins.set(origin, session);
    }
    return sender;
  }

  /**
   * `session` gives back the identity a token named for it (`namedBy`), and the token issued
   * with it: Presence holds that identity for another member (a session that goes on on
   * another node, or one that presented the same token there first).
   */
  disown(session: Session): void {
    this.forget(session);
    session.resumeToken = undefined;
    session.sender = undefined;
    session.origin = undefined;
    // The chats of that identity that came meanwhile are not its either.
    session.ownChats = undefined;
  }

  /** On a cluster, gives a session that has no origin yet one, before its first chat. */
  originate(session: Session): void {
    if (this.originOf !== undefined && session.origin === undefined) {
      this.identify(session, session.sender ?? newSender());
    }
  }

  /**
   * The sender a token that takes nothing back names (resume-token.ts), unless a session
   * here holds it: a spent token of a session that goes on names nobody. On a cluster,
   * Presence refuses the grant of a token of an identity another node's member holds
   * (`disown` then).
   */
  namedBy(token: string): string | undefined {
    const sender = senderOf(token);
    return sender === undefined || this.senders.has(sender) ? undefined : sender;
  }

  /** The local session whose chat carries `origin`, if any. */
  sentBy(origin: string | undefined): Session | undefined {
    if (origin === undefined) return undefined;
    // Taken over meanwhile: the sender is now the connection that took the session.
    const from = this.origins.get(origin);
    return from === undefined ? undefined : holderOf(from);
  }

  /** How many tokens, identities and origins are held: what a leak would grow. */
  get sizes(): { tokens: number; senders: number; origins: number } {
    return { tokens: this.tokens.size, senders: this.senders.size, origins: this.origins.size };
  }

  /** `session` has ended: it holds nothing any more. */
  forget(session: Session): void {
    if (session.resumeToken !== undefined) this.tokens.delete(session.resumeToken);
    if (session.sender !== undefined && this.senders.get(session.sender) === session) {
      this.senders.delete(session.sender);
    }
    if (session.origin !== undefined && this.origins.get(session.origin) === session) {
      this.origins.delete(session.origin);
    }
  }
}
