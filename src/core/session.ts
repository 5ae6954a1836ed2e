import type { Capability } from '../protocol/capabilities.js';
import type { Limits } from '../protocol/pacing.js';
import type { ParseResult } from '../protocol/request-codec.js';
import { type ChatEvent, type Deliverable, Delivery, type Reply } from './events.js';
import type { Operator } from './moderation.js';
import { OwnChats, type StoredChat } from './own-chats.js';
import type { DisconnectReason, Peer, PeerAddress } from './ports.js';
import type { TokenBucket } from './rate-limit.js';
import type { Member, Room } from './room.js';
import { withTimeout } from './timeout.js';

/** Where a session reports what its transport tells it. Implemented by Chat. */
export interface SessionHost {
  receive(session: Session, result: ParseResult): void;
  /**
   * A run of whitespace between requests worth one request (FrameDecoder's 'blank'), or a
   * WebSocket ping or pong from the client.
   */
  blank(session: Session, what: Blank): void;
  /** Whether the session's next frame is worth parsing; if not, the host has refused it. */
  admitsFrame?(session: Session): boolean;
  ended(session: Session, reason: DisconnectReason): void;
  disconnect(session: Session, reason: DisconnectReason): void;
  /** Something threw while serving this session; it alone is ended. */
  failed(session: Session, err: unknown, where: 'request' | 'send', input?: string): void;
}

export type SessionState = 'greeting' | 'joined' | 'closed';

/** What a client sent that is no request, yet costs the server a request's worth of work. */
export type Blank = 'whitespace' | 'control';

/** How long a release waits for the room's epoch (Session.release) before it goes on without. */
const CURRENT_MS = 2_000;
/** Live events one room may hold back while its history is replayed (a slow store, a busy room). */
const MAX_HELD = 10_000;
/**
 * What all of a session's held events may keep alive, in about bytes. Counted
 * only in events, 10,000 chats of 4,096 emoji per room (a resume holds up to 20
 * rooms at once) kept hundreds of MB alive for one client that read nothing.
 */
export const MAX_HELD_BYTES = 8 * 1024 * 1024;

/** About what a held delivery keeps alive: its text (two bytes a unit) and that text encoded once. */
function heldWeight(delivery: Delivery): number {
  const item = delivery.item;
  return 128 + (item.type === 'chat' ? 4 * (item.msg.length + item.from.length) : 0);
}

/** The connection that holds `session` now: the last to take it over, or itself. */
export function holderOf(session: Session): Session {
  let holder = session;
  while (holder.successor !== undefined) holder = holder.successor;
  return holder;
}

/** The capabilities of a session that negotiated nothing (and of one not yet open). */
export const NO_CAPS: ReadonlySet<Capability> = new Set();

/**
 * One client, from connect to close, whatever transport carries it.
 * Transports call receive() with each decoded frame and ended() when the
 * connection is gone; everything else happens in the core.
 */
export class Session implements Member {
  state: SessionState = 'greeting';
  nickname = '';
  /** The nickname's uniqueness key while registered. */
  key = '';
  /** The lobby, once joined; the room of the course protocol. */
  room: Room | undefined;
  /** Every room the session is in, the lobby included (see rooms.ts). */
  readonly rooms = new Set<Room>();
  /** Flood control, when enabled: the bucket and the run of refused requests. */
  bucket: TokenBucket | undefined;
  strikes = 0;
  /** The flood limits its CONNECT's "03" told it (clients that negotiated), which it paces to. */
  told: Limits | undefined;
  /**
   * The operator this session proved itself with OPER, if any; kept until it leaves or a
   * reload changes that operator's key (its name or password).
   */
  operator: Operator | undefined;
  /** Set once a fault has been reported, so it is logged once. */
  faulted = false;
  /**
   * Requests wait here, in order, while earlier ones are unfinished (Chat.receive):
   * undefined when nothing waits.
   */
  backlog: ParseResult[] | undefined;
  /** About how much text the backlog holds (Chat.route): reading pauses past a bound. */
  backlogBytes = 0;
  /** Requests started and not finished (a chat being stored, a history read). */
  pending = 0;
  /**
   * The connection went while requests were under way (Chat.ended): why, for the leave that
   * waits until they and the requests behind them are handled.
   */
  goneWith: DisconnectReason | undefined;
  /** An unfinished request that no later request may overtake, not even a chat. */
  barrier = false;
  /** Reading was paused because the backlog is long. */
  paused = false;
  /** The "left" events of a session that ended with chats still being stored: they go out after them. */
  departures: ChatEvent[] | undefined;
  /** The member id Presence knows this session by; a session taken back keeps the ghost's. */
  presenceId: string;
  /** The token that takes this session back (capability "history"). */
  resumeToken: string | undefined;
  /** The session that took this one over with its token; its chats still being stored are its. */
  successor: Session | undefined;
  /**
   * On a cluster: a resume on another node took its member over, places and all; it is
   * closed as replaced, and has nothing left to release.
   */
  movedAway = false;
  /**
   * On a cluster: a JOIN_ROOM whose place Presence granted, its "joined" not published yet.
   * Moved away meanwhile, the session has it published at once (ClusterNode.evicted), so
   * that the room hears of the join before anything the member does where it went.
   */
  announceJoin: (() => void) | undefined;
  /**
   * Its lasting identity for the history store (MessageDraft.sender): made with its
   * first resume token, which carries it, so a resume on any node keeps it.
   */
  sender: string | undefined;
  /** On a cluster: what its chats carry of `sender` (ChatEvent.origin). */
  origin: string | undefined;
  /** On a cluster, from its first chat: which copies of its chats are this node's (OwnChats). */
  ownChats: OwnChats | undefined;
  /**
   * On a cluster, an operator's: kicks whose "99" it was shown through a room, or told of by
   * the 'kicked' notice while the room's copy may still come (KickAnswers).
   */
  kickAnswers: Map<string, 'shown' | 'told'> | undefined;
  /** Its "03" has gone out. */
  private welcomed = false;

  /**
   * About what the live events held behind its replays keep alive, in bytes: its transport
   * counts them with what it has queued, in the total that all clients may hold together.
   */
  get heldBytes(): number {
    return this.heldSize;
  }

  /** Its "03" has gone out: a client takes nothing before it. */
  get welcomeSent(): boolean {
    return this.welcomed;
  }
  /** "71"s that came before it (reply). */
  private storedEarly: Reply[] | undefined;
  /** On a cluster, once its nickname is claimed: its member's lineage (ChatEvent.lineage). */
  lineage: string | undefined;
  private granted: ReadonlySet<Capability> = NO_CAPS;
  /** Rooms whose history is being replayed: their live events wait here, in order. */
  private held: Map<string, Delivery[]> | undefined;
  /** heldWeight of everything in `held`. */
  private heldSize = 0;
  /**
   * Rooms replayed up to an id whose live copies may still be on their way (a
   * store across a network answers the replay's read before the broker hands
   * over what it read): chat at or below the floor is dropped until a higher
   * one passes, after which ids only grow.
   */
  private floors: Map<string, { readonly top: number; readonly epoch: string }> | undefined;

  constructor(
    readonly id: number,
    readonly peer: Peer,
    private readonly host: SessionHost,
  ) {
    this.presenceId = String(id);
  }

  get address(): PeerAddress {
    return this.peer.remote;
  }

  /**
   * The client sent "caps" in CONNECT, so it speaks confab's framing and can
   * take several newline-terminated messages in one read. Course clients read
   * one JSON object per recv() and must get one message per write.
   */
  get negotiated(): boolean {
    return this.granted !== NO_CAPS;
  }

  /**
   * The capabilities granted at CONNECT. A new set replaces the old one
   * (never mutated), so a transport can tell by identity when to pick
   * another encoder.
   */
  get caps(): ReadonlySet<Capability> {
    return this.granted;
  }

  has(capability: Capability): boolean {
    return this.granted.has(capability);
  }

  grant(capabilities: readonly Capability[]): void {
    this.granted = new Set(capabilities);
  }

  /**
   * Asked by the transport before it parses a frame: false when the frame was refused unread
   * (the session is then being closed).
   */
  admitsFrame(): boolean {
    return this.state !== 'greeting' || this.host.admitsFrame?.(this) !== false;
  }

  /** Called by the transport for each frame it decoded. */
  receive(result: ParseResult): void {
    this.host.receive(this, result);
  }

  /** Called by the transport for each run of whitespace worth a request, or control frame. */
  blank(what: Blank): void {
    this.host.blank(this, what);
  }

  /** Called by the transport once the connection is closed, whoever closed it. */
  ended(reason: DisconnectReason): void {
    this.host.ended(this, reason);
  }

  /** Called by the transport when it must end the session (limits, timeouts). */
  disconnect(reason: DisconnectReason): void {
    this.host.disconnect(this, reason);
  }

  /**
   * The per-recipient fault boundary: whatever encoding or writing this one
   * message throws ends this session only, so a broadcast still reaches
   * every other member.
   */
  deliver(delivery: Delivery): void {
    if (this.held !== undefined && this.hold(delivery)) return;
    if (this.floors !== undefined && this.belowFloor(delivery)) return;
    if (delivery.item.type === 'gap' && this.gapSeen(delivery.item)) return;
    this.send(delivery);
  }

  /** Like deliver, never held: replies, and the history replayed to this session alone. */
  send(delivery: Delivery): void {
    if (this.state === 'closed') return;
    try {
      this.peer.send(delivery);
    } catch (err) {
      this.host.failed(this, err, 'send');
    }
  }

  /**
   * Like send, for output the client asked for (history): sent as fast as the
   * client reads it, so a slow reader is waited for rather than cut off.
   */
  async sendPaced(deliveries: readonly Delivery[]): Promise<void> {
    if (this.state === 'closed' || deliveries.length === 0) return;
    if (this.peer.sendPaced === undefined) {
      for (const delivery of deliveries) this.send(delivery);
      return;
    }
    try {
      await this.peer.sendPaced(deliveries);
    } catch (err) {
      this.host.failed(this, err, 'send');
    }
  }

  /** A transport's own fault boundary reports here what its connection's work threw. */
  failed(err: unknown, input?: string): void {
    this.host.failed(this, err, 'request', input);
  }

  /** The "03"'s limits, saying how much of the burst is left when not all of it is. */
  private withAllowance(welcome: Extract<Reply, { type: 'welcome' }>): Reply {
    const limits = welcome.limits;
    if (limits === undefined || this.bucket === undefined) return welcome;
    const tokens = Math.max(0, Math.floor(this.bucket.available));
    return tokens >= limits.burst ? welcome : { ...welcome, limits: { ...limits, tokens } };
  }

  reply(reply: Reply): void {
    // A chat of the session it took over, stored before this connection's "03" (on a node of
    // a cluster, the takeover waits on Presence): acknowledged after it.
    if (reply.type === 'stored' && !this.welcomed) {
      this.storedEarly ??= [];
      this.storedEarly.push(reply);
      return;
    }
    if (reply.type !== 'welcome') {
      this.send(new Delivery(reply));
      return;
    }
    this.send(new Delivery(this.withAllowance(reply)));
    this.welcomed = true;
    const early = this.storedEarly;
    this.storedEarly = undefined;
    for (const stored of early ?? []) this.deliver(new Delivery(stored));
    this.tellStored(this.ownChats?.takeUntold());
  }

  /**
   * "71" for a chat that the connection this session took over sent, stored after the
   * takeover: after the "03", and behind its room's replay, which leaves it out when it shows
   * the chat. Sent at once, it told a client of an id above those the replay had still to
   * send, and a client that resumed again from it missed them.
   */
  storedForPredecessor(reply: Extract<Reply, { type: 'stored' }>): void {
    if (this.welcomed) this.deliver(new Delivery(reply));
    else this.reply(reply);
  }

  /**
   * "71" for chats of this session that another connection of it stored (OwnChats), as one
   * process tells the connection that took a session over of a chat still being stored.
   * Their cids are not known here. They wait for its "03" (a resume's takeover is granted
   * first), and a room's wait until its history is out, which leaves out those it showed.
   */
  tellStored(chats: readonly StoredChat[] | undefined): void {
    if (chats === undefined || chats.length === 0 || !this.has('history')) return;
    if (!this.welcomed) {
      this.ownChats ??= new OwnChats();
      this.ownChats.hold(chats);
      return;
    }
    for (const { room, id, at } of chats) {
      this.deliver(
        new Delivery({ type: 'stored', room, id, at, cid: undefined, duplicate: false }),
      );
    }
  }

  /** Live events of `room` wait until release(), so they follow the history being replayed. */
  holdRoom(room: string): void {
    this.held ??= new Map();
    // Held already (a session taken over on a cluster node is held from the start): kept.
    if (!this.held.has(room)) this.held.set(room, []);
  }

  /**
   * Sends what was held for `room`, but chat the replay already covered (ids up
   * to `top` of `epoch`): a message stored before the replay read it is
   * delivered live too. After a gap into another epoch every chat is new.
   * Paced like the replay: what arrives meanwhile is held behind it, and the
   * room is live once nothing is left (or the session closed, past MAX_HELD).
   *
   * Held behind a replay that read an epoch this node had not reached (Redis restarted
   * empty while the session waited), chats and gaps of epochs lost before it are dropped:
   * a chat of another epoch than the one in force, and a gap into an epoch the room is not
   * in now (`current`, asked only then). Sent, they were taken for the new epoch's ids.
   */
  async release(
    room: string,
    top: number,
    epoch: string,
    current?: () => Promise<string>,
  ): Promise<void> {
    let passed = false;
    let covered = top;
    let inForce = epoch;
    /**
     * Whether a gap into `into`, with `later` held after it, is into the epoch the room is
     * in now. Followed by a gap into the replay's epoch, it is older. Else the room's epoch
     * is read afresh (it may have moved on while this ran): into another, the gap's epoch
     * was lost before the replay, or after it and before the room's epoch now, whose own
     * gap follows (held, or live). A read that fails or takes over CURRENT_MS says nothing:
     * the gap is sent, as before epochs were compared.
     */
    const newer = async (into: string, later: readonly Delivery[]): Promise<boolean> => {
      if (inForce === '' || current === undefined) return true;
      const back = later.some(
        ({ item }) => item.type === 'gap' && item.reason === 'epoch' && item.epoch === epoch,
      );
      if (back) return false;
      return (await withTimeout(current(), CURRENT_MS).catch(() => into)) === into;
    };
    for (;;) {
      const waiting = this.held?.get(room);
      if (waiting === undefined || this.state === 'closed') return;
      if (waiting.length === 0) break;
      this.held!.set(room, []);
      const out: Delivery[] = [];
      for (let i = 0; i < waiting.length; i++) {
        const delivery = waiting[i]!;
        this.heldSize -= heldWeight(delivery);
        const item = delivery.item;
        if (item.type === 'chat') {
          if (item.epoch !== undefined && inForce !== '' && item.epoch !== inForce) continue;
          if (item.id <= covered) continue;
          passed = true;
        } else if (item.type === 'stored') {
          // The replay showed it as "70"; one with its cid still tells which chat that was.
          if (item.id <= covered && item.cid === undefined) continue;
        } else if (item.type === 'gap' && item.epoch === inForce) {
          // The replay already read the new epoch: the client has it, and those chats. Ids
          // of it deleted before this node read them are news all the same.
          if (item.reason === 'epoch') continue;
        } else if (item.type === 'gap') {
          // Ids deleted in an epoch not in force: one lost before the replay's.
          if (item.reason !== 'epoch') continue;
          if (!(await newer(item.epoch, waiting.slice(i + 1)))) continue;
          inForce = item.epoch;
          // Back into the replay's epoch (a gap sent on a failed read): what it covered holds.
          covered = item.epoch === epoch ? top : 0;
          passed = true;
        }
        out.push(delivery);
      }
      await this.sendPaced(out);
    }
    this.held!.delete(room);
    if (this.held!.size === 0) {
      this.held = undefined;
      this.heldSize = 0;
    }
    // Its floor: the replay's chats are not sent again, nor a "108" into the epoch the
    // "101" named (the node may hear of it only later, when Redis restarted meanwhile).
    if (!passed && epoch !== '') {
      this.floors ??= new Map();
      this.floors.set(room, { top, epoch });
    }
  }

  /**
   * Forgets the joins, leaves, renames and removals held for `room`: the member list it is about to be
   * shown was taken after them, so they are in it already (ChatContext.shownMembers).
   */
  dropHeldChanges(room: string): void {
    const waiting = this.held?.get(room);
    if (waiting === undefined) return;
    const kept = waiting.filter((delivery) => {
      const type = delivery.item.type;
      // A kick's or ban's notice goes with the leave it tells of.
      if (type !== 'joined' && type !== 'left' && type !== 'renamed' && type !== 'moderated') {
        return true;
      }
      this.heldSize -= heldWeight(delivery);
      return false;
    });
    this.held!.set(room, kept);
  }

  /** Forgets what was held for `room`: the member left it before it was released. */
  dropHeld(room: string): void {
    const waiting = this.held?.get(room);
    if (waiting === undefined) return;
    for (const delivery of waiting) this.heldSize -= heldWeight(delivery);
    this.held!.delete(room);
    if (this.held!.size === 0) {
      this.held = undefined;
      this.heldSize = 0;
    }
  }

  private belowFloor(delivery: Delivery): boolean {
    const item = delivery.item;
    if (item.type === 'stored') {
      return item.cid === undefined && item.id <= (this.floors!.get(item.room)?.top ?? 0);
    }
    if (item.type !== 'chat') return false;
    const floor = this.floors!.get(item.room);
    if (floor === undefined) return false;
    if (item.id <= floor.top) return true;
    // Of an epoch lost before the replay's, reaching this node only now (its broker was
    // still catching up): sent, it would be taken for one of the new epoch's ids. A newer
    // epoch's chats come only after its gap, which lifts the floor (the broker hands over a
    // new epoch's loss before its chats; one process's store keeps its epochs while it runs).
    if (item.epoch !== undefined && item.epoch !== floor.epoch) return true;
    this.dropFloor(item.room);
    return false;
  }

  /**
   * A gap in a room's live chats while its floor stands: true when it is into the epoch the
   * replay already showed (nothing new for the client), or of ids deleted in another epoch
   * (one lost before the replay's, as a chat of it above); a gap into another epoch is news,
   * and the floor, which counted ids of the old epoch, no longer applies.
   */
  private gapSeen(item: Extract<Deliverable, { type: 'gap' }>): boolean {
    const floor = this.floors?.get(item.room);
    if (floor === undefined) return false;
    if (item.reason !== 'epoch') return item.epoch !== floor.epoch;
    if (floor.epoch === item.epoch) return true;
    this.dropFloor(item.room);
    return false;
  }

  /**
   * The member is out of `room`: its floor goes, or a member walking through rooms would keep
   * one per room for the rest of its session. A later join replays and sets its own.
   */
  leftRoom(room: string): void {
    if (this.floors?.has(room)) this.dropFloor(room);
  }

  private dropFloor(room: string): void {
    this.floors!.delete(room);
    if (this.floors!.size === 0) this.floors = undefined;
  }

  private hold(delivery: Delivery): boolean {
    const item = delivery.item;
    if (!('room' in item)) return false;
    const waiting = this.held!.get(item.room);
    if (waiting === undefined) return false;
    const weight = heldWeight(delivery);
    if (waiting.length >= MAX_HELD || this.heldSize + weight > MAX_HELD_BYTES) {
      // Closed, not disconnected: this runs inside a broadcast, which must not be re-entered.
      this.held = undefined;
      this.heldSize = 0;
      this.peer.close('slow-consumer');
      return true;
    }
    waiting.push(delivery);
    this.heldSize += weight;
    this.peer.holding?.();
    return true;
  }
}
