import type {
  Broker,
  ChatPlace,
  KickAsker,
  LostReason,
  NodeNotice,
  ResyncCause,
  RoomEvent,
  WhisperEvent,
} from './broker.js';
import type { ChatContext } from './command-context.js';
import { type ChatEvent, Delivery, type SessionRef } from './events.js';
import type { Identities } from './identities.js';
import { JoinPlaces } from './join-places.js';
import { MemberLists, RecentRead } from './member-lists.js';
import { operatorByKey, operatorKey, removalDetail, removedAs } from './moderation.js';
import {
  answerKicker,
  enforceBan,
  keepRemoval,
  kickMissed,
  kickShownInRoom,
  kickUnheard,
  removeMember,
  secondsLeft,
} from './moderation-commands.js';
import { nicknameKey } from './nickname.js';
import type { DisconnectReason } from './ports.js';
import {
  type DeadNode,
  type MemberRef,
  type Presence,
  type PresenceMember,
  ReleaseRetried,
  type RoomCount,
  type RoomLeft,
  RoomNotReady,
  type TakenOver,
} from './presence.js';
import type { Clock } from './rate-limit.js';
import { newSender, newToken, senderOf } from './resume-token.js';
import { leftLine, type Room } from './room.js';
import { MAX_ROOM_LIST } from './room-commands.js';
import { roomKey } from './rooms.js';
import { Roster } from './roster.js';
import { Session } from './session.js';

/** What a node of a cluster shares with the others. */
export interface Cluster {
  readonly presence: Presence;
  readonly broker: Broker;
  /**
   * What the shared history store's chats carry of a sender (MessageDraft.sender) as
   * their origin (StoredMessage.origin: RedisHistoryStore's is a hash, `senderOrigin`).
   */
  originOf(sender: string): string;
  /**
   * How long after a resync a room's members are read again (ms; 0 or none: at once). Long
   * enough for every live node to heartbeat: after a Redis restart each registers its
   * members again then, and a read before that would show them leaving.
   */
  readonly resyncDelayMs?: number;
  /**
   * True while this node may have been reaped (no heartbeat answered for the cluster timeout:
   * its process was paused, or Redis stalled); the first time, its clients are closed
   * (ClusterNode.expired). Asked before a request or an event from the others is served: a node that
   * runs again after a pause reads its sockets before its timers run, and must not act for
   * members whose nicknames the others may have given away.
   */
  stale?(): boolean;
}

/** What a node uses of the Chat that owns it: the chat as handlers see it, and its registries. */
export interface NodeHost {
  readonly chat: ChatContext;
  /** Every open session, joined or not. */
  readonly sessions: ReadonlySet<Session>;
  /** Joined sessions by nickname key. */
  readonly nicknames: Map<string, Session>;
  /** Who holds each resume token and lasting identity, and each origin. */
  readonly identities: Identities;
  /** Runs `then` once the session's requests under way have finished. */
  whenIdle(session: Session, then: () => void): void;
}

/**
 * A removal or a whisper chasing a member that keeps resuming elsewhere gives up after this
 * many nodes.
 */
const MAX_FOLLOW_HOPS = 3;

/**
 * Whispers that may wait, each, for a member not keeping up with what it is sent; more than
 * these are dropped. Their senders were told "22" when this node took them.
 */
const MAX_WHISPERS_WAITING = 16;

/** What the whispers waiting for one member may come to at most (whisperCost). */
const MAX_WHISPER_BYTES_WAITING = 64 * 1024;

/** A whisper's bytes as sent at most: every character escaped (`\u0001`), and the frame. */
function whisperCost(event: WhisperEvent): number {
  return 6 * (event.msg.length + event.from.length) + 64;
}

/** The whispers waiting for one member not keeping up, in the order they came. */
interface WaitingWhispers {
  readonly queue: {
    readonly delivery: Delivery;
    readonly event: WhisperEvent;
    readonly cost: number;
  }[];
  bytes: number;
}

/** Whether `session` is in every room of `places` (by key): all of them entered here. */
function holdsEvery(session: Session, places: TakenOver['rooms']): boolean {
  const held = new Set<string>();
  for (const room of session.rooms) held.add(room.key);
  return places.every((place) => held.has(place.room));
}

/** A KICK's operator as its room's "99" names it (kickShownInRoom): not the nickname it asked. */
function askerOf(asker: KickAsker | undefined): SessionRef | undefined {
  return asker === undefined ? undefined : { node: asker.node, member: asker.member };
}

/**
 * What a node of a cluster (`ChatOptions.cluster`) does on top of the single-process chat:
 * it hands room events to the broker and delivers what the broker hands back, keeps its
 * rooms subscribed while they have local members, shows them who joined and left
 * elsewhere, takes sessions over from any node, and frees its members in Presence when
 * they leave. The Chat that owns it calls in where the two paths part.
 */
export class ClusterNode {
  /**
   * Per room key, local members in it or on their way in: the broker
   * subscription lives while this is above zero, so a join in flight is not
   * left unsubscribed by a leave that empties the room meanwhile.
   */
  private readonly interest = new Map<string, number>();
  /** Per subscribed room key, who its local members were shown in it (see `reread`). */
  private readonly rosters = new Map<string, Roster>();
  /** On a cluster: each room's members as Presence gave them, for USERS (member-lists.ts). */
  readonly memberLists: MemberLists;
  /** The rooms with members anywhere, and how many, for ROOMS (member-lists.ts). */
  readonly roomCounts: RecentRead<readonly RoomCount[]>;
  /** Rooms (key -> name) of PARTs whose leave in Presence failed: see partInDoubt. */
  private readonly partsInDoubt = new WeakMap<Session, Map<string, string>>();
  /** The whispers waiting for each member not keeping up (whisperWhenRead). */
  private readonly whispersWaiting = new WeakMap<Session, WaitingWhispers>();
  /** Presence releases in flight, so a stop can wait for their "30"s to go out. */
  private readonly releases = new Set<Promise<void>>();
  /** Rooms whose members are read again once their resync has waited (see `resynced`). */
  private readonly resyncs = new Map<string, ReturnType<typeof setTimeout>>();
  /**
   * Per room key, this node's members without history that joined it and wait, held, for
   * their "joined" to come back in its place among the room's chats (see `awaitPlace`).
   */
  private readonly placing = new JoinPlaces();

  private readonly chat: ChatContext;
  private readonly sessions: ReadonlySet<Session>;
  private readonly nicknames: Map<string, Session>;
  private readonly identities: Identities;
  private readonly host: NodeHost;

  constructor(
    readonly cluster: Cluster,
    host: NodeHost,
    clock: Clock,
  ) {
    this.host = host;
    this.chat = host.chat;
    this.sessions = host.sessions;
    this.nicknames = host.nicknames;
    this.identities = host.identities;
    const presence = cluster.presence;
    this.memberLists = new MemberLists((key) => presence.members(key), clock);
    this.roomCounts = new RecentRead(() => presence.rooms(MAX_ROOM_LIST), clock);
    cluster.broker.onEvent({
      room: (key, event) => this.arrived(key, event),
      whisper: (event) => this.whispered(event),
      notice: (notice) => this.noticed(notice),
      lost: (key, reason, epoch) => this.gap(key, reason, epoch),
      resync: (key, missed) => this.resynced(key, missed),
      placed: (key, event, after) => this.placing.placed(key, event, after),
      unplaced: (key, event) => this.placing.unplaced(key, event.nickname),
    });
  }

  /**
   * In a cluster the broker hands every room event back, to this node's own
   * members too (at once, for events published here); whispers to members of
   * other nodes go through WHISPER's own path (`whisperTo`).
   */
  publish(event: ChatEvent, epoch: string | undefined): void {
    if (event.type === 'whisper') {
      this.whispered(event);
      return;
    }
    const room =
      event.room === this.chat.lobby.name ? this.chat.lobby : this.chat.rooms.named(event.room);
    const key = room?.key ?? roomKey(event.room);
    this.cluster.broker.publish(key, event, epoch);
  }

  /**
   * Calls `then` once this node hands over `room`'s chats of `epoch`, after the "108" of a
   * move to it, and, given `through`, its chats up to that id (Broker.inEpoch).
   */
  inEpoch(room: Room, epoch: string, then: (movedTo?: string) => void, through?: number): void {
    this.cluster.broker.inEpoch(room.key, epoch, then, through);
  }

  /** A room event from the broker: to this node's members of the room, but the one it is about. */
  private arrived(key: string, event: RoomEvent): void {
    if (event.type !== 'chat') this.memberLists.changed(key);
    const from = event.type === 'chat' ? this.identities.sentBy(event.origin) : undefined;
    const roster = this.rosters.get(key);
    const replaced = roster?.replacing(event);
    const shown = roster === undefined ? event : roster.apply(event);
    if (shown === undefined) return;
    if (this.cluster.stale?.() === true) return;
    // Its session's, stored by another connection of it (on another node, before a resume)?
    if (from !== undefined && event.type === 'chat') {
      const chat = { room: event.room, key, id: event.id, at: event.at };
      from.tellStored(from.ownChats === undefined ? [chat] : from.ownChats.arrived(chat));
    }
    const room = this.roomAt(key);
    if (room === undefined || room.size === 0) return;
    // Not to the newcomer, who holds the name now: its own join may come back only once it
    // is in the room (held while the room caught up).
    if (roster !== undefined && replaced !== undefined) {
      this.deliverCounted(room, roster, replaced, this.subject(event));
    }
    if (roster !== undefined && (shown.type === 'joined' || shown.type === 'left')) {
      this.deliverCounted(room, roster, shown, this.subject(event));
      return;
    }
    if (shown.type === 'moderated' && shown.action === 'kick') {
      const subject = this.subject(shown);
      const delivery = new Delivery(shown);
      for (const member of room.list()) {
        if (member === subject) continue;
        if (
          member instanceof Session &&
          !kickShownInRoom(member, this.cluster.presence.node, shown)
        )
          continue;
        member.deliver(delivery);
      }
      return;
    }
    room.deliver(new Delivery(shown), shown.type === 'chat' ? from : this.subject(event));
  }

  /**
   * A join or leave to the room's members but `except`, each with the count of the members
   * it was shown: a joiner whose own join has not come back yet counts itself too.
   */
  private deliverCounted(
    room: Room,
    roster: Roster,
    event: Extract<RoomEvent, { readonly type: 'joined' | 'left' }>,
    except: Session | undefined,
  ): void {
    const shown = new Delivery(event);
    let joiner: Delivery | undefined;
    for (const member of room.list()) {
      if (member === except) continue;
      const count = roster.countFor(String(member.id), event.count);
      if (count === event.count) {
        member.deliver(shown);
        continue;
      }
      joiner ??= new Delivery({ ...event, count });
      member.deliver(joiner);
    }
  }

  /**
   * The local member an event comes from, who is not shown it: the joiner, the renamer,
   * the member being removed. Nicknames are unique across the cluster. (Chats: `sentBy`.)
   */
  private subject(event: RoomEvent): Session | undefined {
    switch (event.type) {
      case 'joined':
      case 'moderated':
        return this.chat.find(event.nickname);
      case 'renamed':
        return this.chat.find(event.to);
      default:
        return undefined;
    }
  }

  /**
   * Events of a room may have been missed (the subscription was down, or another node's
   * PUBLISH failed): show its members what changed meanwhile.
   */
  private resynced(key: string, missed: ResyncCause): void {
    // A join published while the subscription was down does not come back.
    if (missed === 'subscription') this.placing.giveUp(key);
    const delay = this.cluster.resyncDelayMs ?? 0;
    if (delay <= 0) {
      this.reread(key, true);
      return;
    }
    const due = this.resyncs.get(key);
    if (due !== undefined) {
      // A read due sooner would come before the other nodes registered their members again
      // after the outage that took the subscription, and show them leaving: it waits too.
      // A resync for other causes keeps the read due, so constant joins do not put it off.
      if (missed !== 'subscription') return;
      clearTimeout(due);
    }
    const timer = setTimeout(() => {
      this.resyncs.delete(key);
      this.reread(key, true);
    }, delay);
    timer.unref();
    this.resyncs.set(key, timer);
  }

  /**
   * A member without history is joining `room` on a node of a cluster: chats published
   * before its join may still be on their way here, and one process would not show them.
   * From now the room's events are held for it, until its "joined" comes back in its place
   * among the chats (`JoinPlaces.placed`). The join's reply waits for that place, so that whatever
   * the client does after it comes after the join; then `Chat.enterPlaced` lets the member
   * have what was held. Undefined when nothing need wait: one process, or a member with
   * history (its replay does the same).
   */
  awaitPlace(
    session: Session,
    room: Room,
    nickname: string,
  ): Promise<ChatPlace | undefined> | undefined {
    if (session.has('history')) return undefined;
    session.holdRoom(room.name);
    return this.placing.wait(room.key, nickname);
  }

  /**
   * See ChatContext.shownMembers: the room's roster for `session` (in it, though its own join
   * may not have been handed here yet, behind a catch-up), once a read of Presence settled.
   */
  shownMembers(
    key: string,
    session: Session,
    read: readonly PresenceMember[] | undefined,
  ): string[] | undefined {
    const roster = this.rosters.get(key);
    const shown = roster?.shown();
    if (roster === undefined || shown === undefined) {
      // Read again, so that the next joiners get a list from it.
      if (read !== undefined && roster?.stale === true) this.recheck(key);
      return undefined;
    }
    if (!roster.holds(session.key)) {
      shown.push(session.nickname);
      roster.showing(session.key, String(session.id));
    }
    if (read !== undefined && !roster.agrees(read, session.key)) this.recheck(key);
    return shown;
  }

  /**
   * A joiner's own read of the room's members did not agree with the roster it was shown:
   * joins and leaves on their way here, most often, or members Presence has again that no
   * event tells of (registered again after Redis restarted empty, before this node first
   * read the room). The room is read again, and its members are shown what it finds.
   */
  recheck(key: string): void {
    this.resynced(key, 'publish');
  }

  /** The capacity of the room under `key` (the lobby's too), if this node has it. */
  capacityOf(key: string): number | undefined {
    return this.roomAt(key)?.capacity;
  }

  /** The lobby or a room this node knows, by its key. */
  private roomAt(key: string): Room | undefined {
    return key === this.chat.lobby.key ? this.chat.lobby : this.chat.rooms.keyed(key);
  }

  /**
   * Reads the room's members from Presence: at first to know who was shown,
   * and after a resync to show the local members, as "30"s and "8"s, who
   * left and joined while the events did not reach this node.
   */
  private reread(key: string, show: boolean): void {
    const lists = this.memberLists;
    const roster = this.rosters.get(key);
    if (roster === undefined) return;
    lists.changed(key);
    const token = roster.begin();
    lists.fresh(key).then(
      (members) => {
        if (this.rosters.get(key) !== roster) return;
        const room = this.roomAt(key);
        const name = room?.name ?? key;
        const listed = members.map((m) => m.nickname);
        const lineages = members.map((m) => m.lineage);
        // This node's own members are in the room whatever Presence says (after a Redis
        // restart it may not have them again yet): one that lost its place there is closed,
        // and its leave told, like any other.
        if (room !== undefined) {
          const keys = new Set(listed.map(nicknameKey));
          for (const member of room.list()) {
            if (keys.has(nicknameKey(member.nickname))) continue;
            listed.push(member.nickname);
            lineages.push(member.lineage);
          }
        }
        const changes = roster.settle(token, listed, name, lineages);
        if (!show || changes.length === 0) return;
        this.chat.log.info({ room: name, changes: changes.length }, 'members of a room read again');
        if (room === undefined || room.size === 0) return;
        for (const event of changes) room.deliver(new Delivery(event), this.subject(event));
      },
      (err: unknown) =>
        this.chat.log.warn({ err, room: key }, 'could not read the members of a room'),
    );
  }

  /**
   * The broker could not hand over some of a room's chats: its members with
   * "history" are told, in line with the chats, as a resume would tell them.
   */
  private gap(key: string, reason: LostReason, epoch: string): void {
    const room = this.roomAt(key);
    if (room === undefined || room.size === 0) return;
    this.chat.log.warn({ room: room.name, reason, epoch }, 'chats of a room were lost');
    room.deliver(
      new Delivery({
        type: 'gap',
        room: room.name,
        epoch,
        reason: reason === 'epoch' ? 'epoch' : 'deleted',
      }),
    );
  }

  /** From another node: a member of this one to remove or close, or the ban list changed. */
  private noticed(notice: NodeNotice): void {
    const now = this.chat.now();
    switch (notice.type) {
      case 'remove':
        this.removeNoticed(notice);
        return;
      case 'banned':
        this.chat.bans.add(notice.ban, now);
        enforceBan(this.chat, notice.ban, notice.seconds);
        return;
      case 'unbanned':
        this.chat.bans.remove(notice.mask, now);
        return;
      case 'evict':
        this.evicted([notice.member]);
        return;
      case 'missed':
      case 'unheard': {
        const operator = this.sessionOf(notice.asker.member);
        if (operator?.state !== 'joined') return;
        if (notice.type === 'missed') kickMissed(operator, notice.asker.nickname);
        else kickUnheard(operator, notice.asker.nickname, notice.lost ? undefined : false);
        return;
      }
      case 'kicked': {
        const operator = this.sessionOf(notice.asker.member);
        if (operator !== undefined) answerKicker(operator, notice);
        return;
      }
    }
  }

  /**
   * A removal a KICK on any node asked for. The member may have been taken over by
   * a resume on a third node meanwhile, before or after its eviction notice
   * reaches this one: so it is removed here only if Presence still has it on
   * this node, in the same step that frees it (a resume after that finds
   * nothing to take); else the notice goes on to the member a resume moved it
   * to, if any, a few hops at most. Never a kick announced while the member
   * stays, nor a removal of someone else who took its nickname.
   */
  private removeNoticed(notice: Extract<NodeNotice, { type: 'remove' }>, waited = false): void {
    const cluster = this.cluster;
    const session = this.sessionOf(notice.member);
    if (session !== undefined && session.pending > 0 && !waited) {
      // Most often a resume under way (its "03" not sent yet): removed once it is done.
      this.host.whenIdle(session, () => this.removeNoticed(notice, true));
      return;
    }
    const nickname = session?.nickname ?? notice.nickname;
    const names = new Map<string, string>();
    for (const room of session?.rooms ?? []) names.set(room.key, room.name);
    const { action, by, reason, seconds } = notice;
    const asker = action === 'kick' ? askerOf(notice.asker) : undefined;
    // Why, for its reconnect should its connection be dead, kept before the member is freed:
    // a resume through another node that finds it freed finds this too.
    const token = session?.resumeToken;
    const kept =
      token === undefined
        ? Promise.resolve()
        : keepRemoval(
            this.chat,
            cluster.presence,
            token,
            {
              action,
              detail: removalDetail(action, by, reason, seconds),
            },
            nickname,
          );
    const expelled = kept
      .then(() => cluster.presence.expel(notice.member))
      .catch((err: unknown) => {
        if (!(err instanceof ReleaseRetried)) throw err;
        // Its answer was lost: what the retry frees is told as this answer would have been.
        this.chat.log.warn({ err, nickname }, `could not ${action} a member yet: retrying`);
        return err.retried;
      });
    const work = expelled.then(async (left) => {
      if (left !== undefined) {
        let announcedIn: string | undefined;
        if (session !== undefined && session.state === 'joined') {
          announcedIn = removeMember(this.chat, session, action, by, reason, seconds, asker);
        } else if (nickname !== undefined) {
          // Its connection closed a moment before, but the removal freed it: the rooms are
          // told of the removal all the same, where they would have been.
          const seen = left.find((l) => l.room === this.chat.lobby.key) ?? left[0];
          if (seen !== undefined) {
            const room = this.roomAt(seen.room)?.name ?? names.get(seen.room) ?? seen.room;
            this.chat.publish({
              type: 'moderated',
              room,
              action,
              nickname,
              by,
              reason,
              seconds,
              asker,
            });
            announcedIn = seen.room;
          }
        }
        if (notice.asker !== undefined && action === 'kick' && nickname !== undefined) {
          const kicked = { asker: notice.asker, room: announcedIn, nickname, by, reason };
          cluster.broker.notify(notice.asker.node, { type: 'kicked', ...kicked });
        }
        // Its own release in leaving finds nothing left: the "30"s go out from here.
        this.announceLeft(left, nickname ?? '', names, removedAs(action), session ?? {});
        return;
      }
      // Followed by its identity: by nickname, a member who left or renamed meanwhile would
      // hand the removal to whoever took that nickname since.
      const hops = (notice.hops ?? 0) + 1;
      const now =
        hops > MAX_FOLLOW_HOPS
          ? undefined
          : await cluster.presence.successor(cluster.presence.node, notice.member);
      if (now === undefined) {
        this.chat.log.warn(
          { nickname, by, action, hops },
          `${nickname} was gone before the ${action}`,
        );
        // Its operator is told as on one process; a ban stays stored, whoever it found.
        if (notice.asker !== undefined) {
          cluster.broker.notify(notice.asker.node, { type: 'missed', asker: notice.asker });
        }
        return;
      }
      const moved = { ...notice, member: now.id, nickname: now.nickname, hops };
      const heard = await cluster.broker.notify(now.node, moved);
      // Nothing else would answer its operator: told as when the first node did not hear it.
      if (heard !== true && notice.asker !== undefined) {
        const unheard = {
          type: 'unheard',
          asker: notice.asker,
          lost: heard === undefined,
        } as const;
        cluster.broker.notify(notice.asker.node, unheard);
      }
    });
    this.track(
      work.catch((err: unknown) =>
        this.chat.log.warn({ err, nickname }, `could not ${action} a member`),
      ),
    );
  }

  /**
   * Reads the cluster's ban list again: at start, and now and then in case a
   * notice of a change was missed (the subscriber connection was down).
   */
  async refreshBans(): Promise<void> {
    const presence = this.cluster.presence;
    const bans = await presence.bans();
    const now = this.chat.now();
    const known = new Set(this.chat.bans.list(now).map((ban) => JSON.stringify(ban)));
    this.chat.bans.replace(bans);
    // A ban whose notice this node missed removes its members now, as the notice would have.
    for (const ban of bans) {
      if (!known.has(JSON.stringify(ban))) enforceBan(this.chat, ban, secondsLeft(ban, now));
    }
  }

  /** The open session that holds Presence's member `id` here (a walk of every session). */
  private sessionOf(id: string): Session | undefined {
    let session: Session | undefined;
    for (const s of this.sessions) {
      if (s.state !== 'closed' && s.presenceId === id) session = s;
    }
    return session;
  }

  /**
   * A whisper for a member of this node. "22" went to its sender once this node took it, so
   * it follows the member it was meant for: by its id, through a rename here, to the session
   * a resume under way here is making (once its "03" is out), or on to the node a resume
   * elsewhere moved it to. (From a node of an older version it names the nickname only.)
   */
  private whispered(event: WhisperEvent, waited = false): void {
    if (this.cluster.stale?.() === true) return;
    const member = event.member;
    let session = this.chat.find(event.to);
    if (member !== undefined && session?.presenceId !== member) session = this.sessionOf(member);
    if (session !== undefined) {
      const ready = session.state === 'joined' && session.welcomeSent;
      if (!ready && session.pending > 0 && !waited) {
        this.host.whenIdle(session, () => this.whispered(event, true));
        return;
      }
      if (ready) {
        const delivery = new Delivery(
          member === undefined ? event : { ...event, to: session.nickname },
        );
        if (!this.whispersWaiting.has(session) && session.peer.busy?.() !== true) {
          session.deliver(delivery);
        } else {
          this.whisperWhenRead(session, delivery, event);
        }
        return;
      }
    }
    if (member === undefined) return;
    const hops = (event.hops ?? 0) + 1;
    const cluster = this.cluster;
    const lost = () =>
      this.chat.log.info({ from: event.from, to: event.to }, 'a whisper found nobody');
    if (hops > MAX_FOLLOW_HOPS) {
      lost();
      return;
    }
    const followed = cluster.presence.successor(cluster.presence.node, member).then(async (now) => {
      if (now === undefined) {
        lost();
        return;
      }
      const on = { ...event, to: now.nickname, member: now.id, hops };
      if (!(await cluster.broker.whisper(now.node, on))) lost();
    });
    this.track(
      followed.catch((err: unknown) =>
        this.chat.log.warn({ err, to: event.to }, 'could not pass a whisper on'),
      ),
    );
  }

  /**
   * A whisper for a member not keeping up with what it is sent, or behind others that wait:
   * its sender was told "22" when this node took it, so it goes, as history does, once the
   * member has read enough (a resume's replay and held events may just have filled its
   * queue), rather than be lost or cut the member off. One after another, in the order they
   * came; past MAX_WHISPERS_WAITING or MAX_WHISPER_BYTES_WAITING, dropped.
   */
  private whisperWhenRead(session: Session, delivery: Delivery, event: WhisperEvent): void {
    const cost = whisperCost(event);
    let waiting = this.whispersWaiting.get(session);
    if (
      waiting !== undefined &&
      (waiting.queue.length >= MAX_WHISPERS_WAITING ||
        waiting.bytes + cost > MAX_WHISPER_BYTES_WAITING)
    ) {
      const { from, to } = event;
      this.chat.log.debug({ from, to }, 'a whisper to a reader not keeping up dropped');
      return;
    }
    const first = waiting === undefined;
    waiting ??= { queue: [], bytes: 0 };
    waiting.queue.push({ delivery, event, cost });
    waiting.bytes += cost;
    if (first) {
      this.whispersWaiting.set(session, waiting);
      void this.sendWhenRead(session, waiting);
    }
  }

  private async sendWhenRead(session: Session, waiting: WaitingWhispers): Promise<void> {
    // A function: TypeScript takes the state read before an await for the state after it.
    const closed = () => session.state === 'closed';
    try {
      while (waiting.queue.length > 0 && !closed()) {
        await session.sendPaced([waiting.queue[0]!.delivery]);
        // Closed while it waited: not sent (a send past the cap closes it instead).
        if (closed()) break;
        waiting.bytes -= waiting.queue.shift()!.cost;
      }
    } finally {
      this.whispersWaiting.delete(session);
    }
    // Its connection closed meanwhile, most often for a resume that made the member a new
    // session (here or on another node): the whispers left follow the member there.
    for (const { event } of waiting.queue) this.whispered(event, true);
  }

  /**
   * A whisper to a member of another node (Presence said which): resolves once sent (to
   * `false` when no node took it), rejects when it is not known to have been.
   */
  whisperTo(node: string, event: WhisperEvent): Promise<boolean> {
    return this.cluster.broker.whisper(node, event);
  }

  /**
   * A local member is joining `room`: resolves once the room's events reach this node, and
   * fails past ROOM_READY_MS. Every call is paired with one `uninterested`.
   */
  interested(room: Room): Promise<void> {
    return withinReadyDeadline(this.interestIn(room), room.key);
  }

  /**
   * `interested` without the deadline, for a resume: it has taken the session over (its old
   * connection closed), and failing it would free the member and all its rooms, those on a
   * Redis that is up included. It waits for a room whose Redis is down, as before.
   */
  private interestIn(room: Room): Promise<void> {
    const broker = this.cluster.broker;
    const interest = (this.interest.get(room.key) ?? 0) + 1;
    this.interest.set(room.key, interest);
    const subscribed = broker.subscribe(room);
    if (interest === 1) {
      // The room registered under the key, once there is one: its capacity follows reloads.
      this.rosters.set(
        room.key,
        new Roster(() => (this.chat.rooms.keyed(room.key) ?? room).capacity),
      );
      // Read once the room's events arrive, so that none falls between the read and them.
      subscribed.then(
        () => this.reread(room.key, false),
        () => {},
      );
    }
    return subscribed;
  }

  /**
   * `room`, subscribed (`interested`), as the cluster shows it: a room new on this node
   * under `name`, the name Presence says it was made with, on whichever node made it first
   * (a room made here from a look-alike spelling would otherwise be shown differently here);
   * one registered here under the name it has. The subscription is renamed to that name
   * also when it is `room`'s own: a look-alike join racing this one may have renamed it
   * since (`interested`).
   */
  shownAs(room: Room, name: string): Room {
    const shown = name === room.name ? room : this.chat.rooms.room(name);
    this.cluster.broker.subscribe(shown).catch(() => {});
    return shown;
  }

  /** A local member left `room`, or did not get in: the last one unsubscribes. */
  uninterested(key: string): void {
    const broker = this.cluster.broker;
    const left = (this.interest.get(key) ?? 0) - 1;
    if (left > 0) {
      this.interest.set(key, left);
      return;
    }
    this.interest.delete(key);
    this.rosters.delete(key);
    this.memberLists.changed(key);
    this.placing.giveUp(key);
    broker.unsubscribe(key).catch((err: unknown) => {
      this.chat.log.warn({ err, room: key }, 'could not unsubscribe from a room');
    });
  }

  /**
   * A PART whose leave in Presence failed, its answer lost: Presence may or may not have
   * applied it. The failure closes the session (3005); its release then tells this room it
   * left, from the rooms Presence frees if it still had the member there, else with the
   * count Presence gives after, once, as the PART would have.
   */
  partInDoubt(session: Session, room: Room): void {
    const rooms = this.partsInDoubt.get(session) ?? new Map<string, string>();
    rooms.set(room.key, room.name);
    this.partsInDoubt.set(session, rooms);
  }

  /**
   * Presence forgets a member that never got in (its CONNECT was refused,
   * or it left while the claim was on its way).
   */
  forget(session: Session): void {
    const presence = this.cluster.presence;
    this.track(
      presence.release(session.presenceId).then(
        () => {},
        (err: unknown) =>
          this.chat.log.warn({ err, session: session.id }, 'could not release a member'),
      ),
    );
  }

  /** The session proved itself an operator: kept in Presence for a resume on any node. */
  operated(session: Session): void {
    const operator = session.operator;
    if (operator === undefined) return;
    this.track(
      this.cluster.presence
        // Its key, not its name: a resume elsewhere after the password changed brings nothing.
        .operate(session.presenceId, operatorKey(operator))
        .catch((err: unknown) =>
          this.chat.log.warn({ err, session: session.id }, 'could not keep an operator'),
        ),
    );
  }

  private track(work: Promise<void>): void {
    this.releases.add(work);
    void work.finally(() => this.releases.delete(work));
  }

  /**
   * Members of nodes that stopped heartbeating, already removed from
   * Presence by this node: the rooms they were in hear they left.
   */
  reaped(dead: readonly DeadNode[]): void {
    const broker = this.cluster.broker;
    for (const node of dead) {
      // Also when it had no members left (a resume took them elsewhere): an operator sees the
      // cluster shrink.
      this.chat.log.warn(
        { node: node.node, members: node.members.length },
        'a node stopped answering and was removed from the cluster',
      );
      for (const member of node.members) {
        this.chat.log.info(
          { node: node.node, nickname: member.nickname },
          `${member.nickname} left: their server stopped answering.`,
        );
        for (const left of member.rooms) {
          const room = this.chat.rooms.keyed(left.room);
          broker.publish(left.room, {
            type: 'left',
            room: room?.name ?? left.room,
            nickname: member.nickname,
            count: left.count,
            lineage: member.lineage,
          });
        }
      }
    }
  }

  /**
   * This node may have been reaped by the others (its heartbeats went
   * unanswered for the timeout): they may have given its members' nicknames
   * away, so every local client is closed with a transient code.
   */
  expired(): void {
    this.chat.log.error(
      {},
      'cut off from the cluster for longer than the timeout; closing clients',
    );
    for (const session of [...this.sessions]) this.chat.disconnect(session, 'cluster-unavailable');
  }

  /**
   * After Redis came back empty, Presence registered this node's members
   * again; these found their nickname taken meanwhile, and are closed.
   */
  lost(members: readonly string[], crowded: readonly string[] = []): void {
    const ids = new Set(members);
    const told = new Set(crowded);
    for (const session of [...this.sessions]) {
      if (!ids.has(session.presenceId)) continue;
      // Nobody holds the nickname of a member whose room was filled: where this node kept
      // showing it (its own members stay whatever Presence says), its rooms hear it left.
      const nickname = session.nickname;
      const rooms = told.has(session.presenceId) ? [...session.rooms] : [];
      this.chat.disconnect(session, 'cluster-unavailable');
      if (nickname === undefined) continue;
      for (const room of rooms) {
        this.arrived(room.key, { type: 'left', room: room.name, nickname, count: room.size });
      }
    }
  }

  /**
   * This node's members are registered again after Redis lost them: the other nodes may have
   * read their rooms before (this node was paused, or slow to reconnect), and shown them
   * leaving. Those nodes are asked to read the rooms again, and show them back.
   */
  registeredAgain(): void {
    for (const key of this.interest.keys()) this.cluster.broker.askReread(key);
  }

  /** Members a resume took to another node, whose notice was lost: closed as it would have. */
  goneAway(members: readonly string[]): void {
    this.evicted(members);
  }

  /**
   * After Redis came back empty, a member of this node registered again in
   * place of an earlier copy of itself (a resume took it over just before):
   * that copy's node closes it as a takeover does, in case the first notice
   * was lost with Redis.
   */
  displaced(members: readonly MemberRef[]): void {
    const cluster = this.cluster;
    const here: string[] = [];
    for (const member of members) {
      if (member.node === cluster.presence.node) here.push(member.id);
      else cluster.broker.notify(member.node, { type: 'evict', member: member.id });
    }
    this.evicted(here);
  }

  /** The chat is shutting down: no room is read again. */
  stop(): void {
    for (const timer of this.resyncs.values()) clearTimeout(timer);
    this.resyncs.clear();
  }

  /** Resolves once the leaves of sessions already ended are told to the cluster. */
  async settled(): Promise<void> {
    while (this.releases.size > 0) await Promise.allSettled([...this.releases]);
  }

  /**
   * takeBack on a node of a cluster: Presence moves the member the token was
   * granted to, from whichever node, to `session` in one step (so a token
   * works once, on one node), with a new token granted in the same step. A
   * ghost on this node is taken back as on one node; one on another node is
   * closed there (`evicted`), or has gone with its node. The rooms' live
   * events are held until the caller has replayed each (enterRoom).
   */
  async takeOver(session: Session, token: string): Promise<boolean> {
    const cluster = this.cluster;
    const ghost = this.identities.holder(token);
    // The next token carries the same sender, whichever node the member was on. A session
    // here keeps its identity (its chats, its tokens, `namedBy`'s record) until Presence
    // grants the takeover: a connection that loses a race for the token, or whose takeover
    // fails, or that goes meanwhile takes nothing of it, and chats coming back meanwhile are
    // still the old connection's.
    let next: string;
    let sender: string | undefined;
    if (ghost === undefined) {
      // A token of a session on another node, or a spent or unknown one (still its
      // session's, as in takeBack, unless Presence refuses the grant: connectInCluster).
      const named = this.identities.namedBy(token);
      if (named !== undefined) this.identities.identify(session, named);
      next = this.chat.issueToken(session);
    } else {
      sender = senderOf(token) ?? newSender();
      next = newToken(sender);
    }
    let taken: TakenOver | undefined;
    try {
      // A connection gone while its resume waits for a refill must not take the member from
      // the connection that still has it.
      taken = await cluster.presence.takeOver(
        token,
        session.presenceId,
        session.address,
        next,
        // Nor one whose client went while its earlier requests were handled (goneWith).
        () => session.state !== 'closed' && session.goneWith === undefined,
      );
    } catch (err) {
      // Redis may have moved the member to this connection all the same (a lost reply):
      // freed, or it would stay registered for nobody, its nickname and places kept.
      this.forget(session);
      throw err;
    }
    if (taken === undefined) return false;
    // The member's address is this connection's now: not a room event.
    for (const place of taken.rooms) this.memberLists.changed(place.room);
    const local = taken.node === cluster.presence.node;
    if (!local) cluster.broker.notify(taken.node, { type: 'evict', member: taken.id });
    // A ghost whose JOIN_ROOM is on its way may have its place in Presence without having
    // entered the room here: it is closed like one on another node, and the room is told of
    // that join (`movedAway`) while this session takes every place Presence moved.
    if (
      sender !== undefined &&
      local &&
      ghost?.presenceId === taken.id &&
      session.state !== 'closed' &&
      holdsEvery(ghost, taken.rooms) &&
      this.chat.takeBack(session, token)
    ) {
      this.identities.keep(session, next, sender);
      return true;
    }
    // A connection closed meanwhile gets nothing: its removal is done.
    if (sender !== undefined && session.state !== 'closed') {
      this.identities.identify(session, sender);
      this.identities.keep(session, next, sender);
    }
    // A ghost on this node not taken back above is closed like one on another node.
    if (local) this.evicted([taken.id]);
    const rooms = taken.rooms.map((r) =>
      r.room === this.chat.lobby.key
        ? this.chat.lobby
        : (this.chat.rooms.keyed(r.room) ?? this.chat.rooms.room(r.name)),
    );
    try {
      await Promise.all(rooms.map((room) => this.interestIn(room)));
    } catch (err) {
      for (const room of rooms) this.uninterested(room.key);
      this.abandon(session.presenceId, taken.nickname, rooms);
      throw err;
    }
    if (session.state === 'closed') {
      for (const room of rooms) this.uninterested(room.key);
      this.abandon(session.presenceId, taken.nickname, rooms);
      return false;
    }
    session.nickname = taken.nickname;
    session.key = nicknameKey(taken.nickname);
    session.lineage = taken.lineage;
    // An operator stays one, as on one node, while this node's configuration still lists it
    // with the same password.
    if (taken.operator !== undefined)
      session.operator = operatorByKey(this.chat.operators, taken.operator);
    session.state = 'joined';
    this.nicknames.set(session.key, session);
    for (const made of rooms) {
      // Another local member may have made the same room meanwhile: that one.
      const room = made === this.chat.lobby ? made : (this.chat.rooms.find(made.name) ?? made);
      session.holdRoom(room.name);
      this.chat.rooms.add(session, room);
      if (room === this.chat.lobby) session.room = room;
    }
    this.chat.log.info(
      { nickname: session.nickname, ip: session.address.ip, session: session.id, from: taken.node },
      `${session.nickname} took their session back from another node.`,
    );
    return true;
  }

  /**
   * Another node took over these members of this node: their connections are closed, no
   * "30" sent. One walk of the sessions for all of them: after Redis came back empty a
   * node may be told of thousands at once (an array, not arguments: a spread of as many
   * overflows the stack).
   */
  private evicted(members: readonly string[]): void {
    if (members.length === 0) return;
    const ids = new Set(members);
    for (const session of [...this.sessions]) {
      if (session.state !== 'joined' || !ids.delete(session.presenceId)) continue;
      // Its release finds nothing left to free in Presence, so the rooms hear nothing.
      session.movedAway = true;
      session.announceJoin?.();
      this.chat.disconnect(session, 'replaced');
      if (ids.size === 0) return;
    }
  }

  /** A member taken over for a session that closed meanwhile: released, and its rooms told. */
  private abandon(id: string, nickname: string, rooms: readonly Room[]): void {
    const names = new Map(rooms.map((room) => [room.key, room.name]));
    this.release(id, nickname, names, 'lost');
  }

  /**
   * Leaving a cluster: Presence frees the nickname and the places, and says
   * what each room counts after; the "30"s go out then, also when this node
   * is stopping (the rooms live on elsewhere).
   */
  leave(session: Session, reason: DisconnectReason): void {
    // A JOIN_ROOM whose place Presence gave while it reads the room: the release frees that
    // place too, and its "30" must come after the "8" the room would otherwise never see.
    session.announceJoin?.();
    const names = new Map<string, string>();
    for (const room of [...session.rooms]) {
      names.set(room.key, room.name);
      this.chat.rooms.remove(session, room);
      this.uninterested(room.key);
    }
    const parted = this.partsInDoubt.get(session);
    this.partsInDoubt.delete(session);
    for (const [key, name] of parted ?? []) names.set(key, name);
    this.release(session.presenceId, session.nickname, names, reason, session, parted);
  }

  /** Frees a member in Presence; the rooms it was in hear it left. */
  private release(
    id: string,
    nickname: string,
    names: ReadonlyMap<string, string>,
    reason: DisconnectReason,
    who?: Partial<Pick<Session, 'origin' | 'lineage'>>,
    parted?: ReadonlyMap<string, string>,
  ): void {
    const cluster = this.cluster;
    const { presence } = cluster;
    const marks = { origin: who?.origin, lineage: who?.lineage };
    const announce = async (left: readonly RoomLeft[] | undefined) => {
      this.announceLeft(left ?? [], nickname, names, reason, marks);
      // PARTs in doubt whose leave Presence had applied: told with the count it gives now.
      // Not for a member Presence no longer had (moved away by a resume, or reaped).
      if (parted === undefined || left === undefined) return;
      const freed = new Set(left.map((l) => l.room));
      const rest = [...parted.keys()].filter((key) => !freed.has(key));
      try {
        const counts = await Promise.all(rest.map((key) => presence.count(key)));
        const more = rest.map((room, i) => ({ room, count: counts[i]! }));
        this.announceLeft(more, nickname, parted, reason, marks);
      } catch (err) {
        this.chat.log.warn({ err, nickname }, 'could not tell a room a member left');
      }
    };
    // With PARTs in doubt, an expel: it tells a member Presence had from one it had not.
    const removed = parted === undefined ? presence.release(id) : presence.expel(id);
    this.track(
      removed.then(announce, (err: unknown) => {
        this.chat.log.warn({ err, nickname }, 'could not release a member');
        // Its answer was lost: what the retry frees is told as this answer would have been.
        if (err instanceof ReleaseRetried) {
          return err.retried.then(announce, (again: unknown) =>
            this.chat.log.warn({ err: again, nickname }, 'could not release a member'),
          );
        }
      }),
    );
  }

  /** The rooms a member was freed from in Presence hear it left. */
  private announceLeft(
    left: readonly RoomLeft[],
    nickname: string,
    names: ReadonlyMap<string, string>,
    reason: DisconnectReason,
    marks: Partial<Pick<Session, 'origin' | 'lineage'>>,
  ): void {
    const cluster = this.cluster;
    const { origin, lineage } = marks;
    for (const { room, count } of left) {
      const name = this.chat.rooms.keyed(room)?.name ?? names.get(room) ?? room;
      this.chat.log.info(
        { nickname, room: name, users: count, reason },
        leftLine(nickname, name, count, room === this.chat.lobby.key),
      );
      cluster.broker.publish(room, { type: 'left', room: name, nickname, count, origin, lineage });
    }
  }
}

/**
 * How long a join waits for its room's events to reach this node. The room's Redis instance
 * may be down (a `--redis-shards` instance, while Presence's is up): the wait would otherwise
 * last the whole outage, holding the member's later requests, and its nickname once it goes.
 * Longer than ioredis's attempts (about ten seconds), so that a Redis back within them
 * rarely fails a join (the wait starts before Presence's answer, and after a restart every
 * room of the node catches up at once).
 */
export const ROOM_READY_MS = 15_000;

/** `subscribed`, or a failure (handled: the caller may not await it yet) past ROOM_READY_MS. */
function withinReadyDeadline(subscribed: Promise<void>, key: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bounded = new Promise<void>((resolve, reject) => {
    timer = setTimeout(() => reject(new RoomNotReady(key)), ROOM_READY_MS);
    timer.unref();
    subscribed.then(resolve, reject);
  }).finally(() => clearTimeout(timer));
  bounded.catch(() => {});
  return bounded;
}
