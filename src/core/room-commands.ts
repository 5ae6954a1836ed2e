/** The requests of capability "rooms" (JOIN_ROOM, PART_ROOM, ROOMS; see rooms.ts) and HISTORY. */
import { Cmd, ErrorCode } from '../protocol/codes.js';
import type { Position } from '../protocol/messages.js';
import { jsonUtf8Bytes } from '../protocol/text.js';
import {
  type ChatContext,
  type Handler,
  memberGone,
  memberNames,
  names,
  refuse,
} from './command-context.js';
import type { RoomInfo } from './events.js';
import {
  type JoinResult,
  MemberGone,
  type Presence,
  type PresenceMember,
  type RoomCount,
  RoomNotReady,
} from './presence.js';
import { Room } from './room.js';
import { byMembers } from './rooms.js';
import type { Session } from './session.js';

/**
 * JOIN_ROOM "100" {room}
 *   -> "90" 1015 bad name, 1016 already in it, 1014 in too many rooms,
 *      1013 no such room (creation off), 1019 no new room past --max-rooms,
 *      1012 full -- checked in this order;
 *   -> the room's others get "8" {nickname, userCount, room}, then the joiner
 *      "101" {room, members, userCount}. A room that does not exist is made.
 */
export const joinRoom: Handler<typeof Cmd.JOIN_ROOM> = (ctx, session, req) => {
  const room = ctx.rooms.admit(session, req.room);
  if (!(room instanceof Room)) {
    refuse(session, room.code, room.message, req.cmd, room.room);
    return;
  }
  if (ctx.cluster !== undefined) {
    ctx.run(session, joinInCluster(ctx, ctx.cluster.presence, session, room, req.since));
    return;
  }
  const count = room.size + 1;
  ctx.publish({ type: 'joined', room: room.name, nickname: session.nickname, count });
  ctx.rooms.add(session, room);
  ctx.enterRoom(session, room, memberNames(room), count, req.since);
};

/** JOIN_ROOM's place in the room, claimed across the cluster; then as on one node. */
async function joinInCluster(
  ctx: ChatContext,
  presence: Presence,
  session: Session,
  admitted: Room,
  since: Position | undefined,
): Promise<void> {
  const entered = ctx.interested(admitted);
  let inside = false;
  try {
    let joined: JoinResult;
    try {
      joined = await presence.join(
        session.presenceId,
        admitted.key,
        admitted.capacity,
        admitted.name,
      );
    } catch (err) {
      if (!(err instanceof MemberGone)) throw err;
      await memberGone(ctx, presence, session, () =>
        refuse(session, ErrorCode.TRY_AGAIN, TRY_AGAIN, Cmd.JOIN_ROOM),
      );
      return;
    }
    if (!joined.ok) {
      if (joined.reason === 'full') {
        refuse(session, ErrorCode.ROOM_FULL, `${admitted.name} is full`, Cmd.JOIN_ROOM);
      } else {
        refuse(
          session,
          ErrorCode.ALREADY_IN_ROOM,
          `you are already in ${admitted.name}`,
          Cmd.JOIN_ROOM,
          admitted.name,
        );
      }
      return;
    }
    // A resume on another node may take the place with the member while this waits: the
    // room is told of the join this made, then, at once (ClusterNode.evicted).
    let told = false;
    const announce = () => {
      if (told) return;
      told = true;
      ctx.publish({
        type: 'joined',
        room: joined.name,
        nickname: session.nickname,
        count: joined.count,
        origin: session.origin,
        lineage: session.lineage,
      });
    };
    session.announceJoin = announce;
    // Moved away while Presence answered the join.
    if (session.movedAway) announce();
    // Read once the room's events reach this node (its subscription may be coming back):
    // a change landing before the read is in it, one after comes as an event.
    let members: readonly PresenceMember[];
    try {
      await entered;
      members = await ctx.freshMembers(admitted.key);
    } catch (err) {
      if (!(err instanceof RoomNotReady) || session.state !== 'joined' || session.movedAway)
        throw err;
      // Nobody was told of the join: the place goes back, and the member stays in its other
      // rooms, told to ask again, rather than lose its connection to a room it cannot reach.
      await presence.leave(session.presenceId, admitted.key);
      ctx.membersChanged(admitted.key);
      if (session.state === 'joined') {
        const detail = `${admitted.name} cannot be reached for now; try again in a few seconds`;
        refuse(session, ErrorCode.TRY_AGAIN, detail, Cmd.JOIN_ROOM);
      }
      return;
    } finally {
      if (session.announceJoin === announce) session.announceJoin = undefined;
    }
    // The member's place is in any USERS read from here on; one read before, not kept.
    ctx.membersChanged(admitted.key);
    // Another local member (or a resume) may have made the same new room meanwhile: join
    // that one. A room new here has the name it was made with in the cluster. Either way the
    // room's events come under the name it has here, whatever a look-alike join racing this
    // one renamed the subscription to.
    const room = ctx.shownAs(ctx.rooms.find(admitted.name) ?? admitted, joined.name);
    if (session.state !== 'joined') {
      // Its leave releases the place, and the "30" tells the room. But a resume on another
      // node took the place with the member: the room is told of the join this made.
      if (session.movedAway) announce();
      return;
    }
    inside = true;
    const placing = ctx.awaitPlace(session, room, session.nickname);
    ctx.publish({
      type: 'joined',
      room: room.name,
      nickname: session.nickname,
      count: joined.count,
      origin: ctx.originOf(session),
      lineage: session.lineage,
    });
    ctx.rooms.add(session, room);
    const after = placing === undefined ? undefined : await placing;
    // Closed meanwhile: its leave took it out of the room again.
    if (session.state !== 'joined') return;
    const shown = ctx.shownMembers(session, room, members);
    ctx.enterRoom(session, room, shown ?? names(members), shown?.length ?? joined.count, since);
    if (placing !== undefined) ctx.enterPlaced(session, room, after);
  } finally {
    if (!inside) {
      ctx.rooms.abandon(admitted);
      ctx.uninterested(admitted.key);
    }
  }
}

const TRY_AGAIN = 'the cluster is registering you again; try again in a few seconds';

/** HISTORY "106" {room, before?, limit?} -> "107" {room, epoch, messages, more}; 1018 not in it. */
export const history: Handler<typeof Cmd.HISTORY> = (ctx, session, req) => {
  const room = ctx.rooms.find(req.room);
  if (room === undefined || !session.rooms.has(room)) {
    refuse(session, ErrorCode.NOT_IN_ROOM, 'you are not in that room', req.cmd);
    return;
  }
  ctx.readHistory(session, room, req.before, req.limit ?? 50);
};

/**
 * PART "102" {room} -> "103" {room}; the room's others get "30" {nickname, userCount, room}.
 *   -> "90" 1017 for the lobby (leaving it is EXIT), 1018 not in that room.
 */
export const partRoom: Handler<typeof Cmd.PART_ROOM> = (ctx, session, req) => {
  const room = ctx.rooms.find(req.room);
  if (room === ctx.lobby && session.rooms.has(room)) {
    refuse(session, ErrorCode.CANNOT_LEAVE_LOBBY, 'leaving the lobby means EXIT', req.cmd);
    return;
  }
  if (room === undefined || !session.rooms.has(room)) {
    refuse(session, ErrorCode.NOT_IN_ROOM, 'you are not in that room', req.cmd);
    return;
  }
  ctx.rooms.remove(session, room);
  if (ctx.cluster !== undefined) {
    ctx.uninterested(room.key);
    const presence = ctx.cluster.presence;
    const nickname = session.nickname;
    const origin = ctx.originOf(session);
    const lineage = session.lineage;
    const left = (count: number) => {
      if (session.state === 'joined') session.reply({ type: 'room-parted', room: room.name });
      ctx.publish({ type: 'left', room: room.name, nickname, count, origin, lineage });
    };
    // Answered once Presence is: a resume may have taken the member, and the room with it, to
    // another connection first, and this one must not be told it left.
    ctx.run(
      session,
      presence.leave(session.presenceId, room.key).then(
        async (count) => {
          if (count !== undefined) {
            left(count);
            return;
          }
          if (await memberGone(ctx, presence, session, () => undefined)) return;
          // Not moved: Presence lost it (Redis restarted empty), but the room's members were
          // shown it, and it left (also if its connection went meanwhile: its release no
          // longer names the room).
          left(await presence.count(room.key));
        },
        (err: unknown) => {
          // Its answer lost (maybe applied): the session goes (3005), and its release tells
          // the room, whether or not Presence still had it there.
          ctx.partInDoubt(session, room);
          throw err;
        },
      ),
    );
    return;
  }
  session.reply({ type: 'room-parted', room: room.name });
  ctx.publish({ type: 'left', room: room.name, nickname: session.nickname, count: room.size });
};

/**
 * The most rooms one "105" lists: however many rooms clients make, the answer stays one
 * bounded write.
 */
export const MAX_ROOM_LIST = 1000;
/**
 * And about the most bytes it takes as sent: a thousand names of 64 four-byte letters were
 * some 300 KB for a 14-byte request, pulled at the flood limit by every connection.
 */
export const MAX_ROOM_LIST_BYTES = 64 * 1024;
/** What a "105" entry takes besides its name: `{"room":"","userCount":100,"joined":false},`. */
const ROOM_ENTRY_BYTES = 48;

/** The first of `rooms` that fit in MAX_ROOM_LIST entries and MAX_ROOM_LIST_BYTES. */
function bounded(rooms: RoomInfo[]): RoomInfo[] {
  let bytes = 0;
  for (let i = 0; i < rooms.length; i++) {
    bytes += ROOM_ENTRY_BYTES + jsonUtf8Bytes(rooms[i]!.name);
    if (i >= MAX_ROOM_LIST || bytes > MAX_ROOM_LIST_BYTES) return rooms.slice(0, i);
  }
  return rooms;
}

/**
 * ROOMS "104" -> "105" {rooms: [{room, userCount, joined}]}: every room that exists, the
 * lobby first, then the most members first (Rooms.mostJoined); at most MAX_ROOM_LIST.
 */
export const listRooms: Handler<typeof Cmd.ROOMS> = (ctx, session) => {
  if (ctx.cluster !== undefined) {
    ctx.run(
      session,
      ctx.roomCounts().then((listed) => {
        // Cut to MAX_ROOM_LIST and its bytes there.
        const rooms = clusterRooms(ctx, session, listed);
        session.reply({
          type: 'room-list',
          rooms: bounded(byMembers(rooms, rooms[0]!, (r) => r.count)),
        });
      }),
    );
    return;
  }
  const rooms = ctx.rooms.mostJoined(MAX_ROOM_LIST, ctx.now()).map((room) => ({
    name: room.name,
    count: room.size,
    joined: session.rooms.has(room),
  }));
  session.reply({ type: 'room-list', rooms: bounded(rooms) });
};

/**
 * ROOMS on a node of a cluster: the rooms with members on any node (Presence
 * knows them, made on whichever node), shown under this node's name for those
 * it knows; then rooms that exist here though empty everywhere (declared ones).
 */
function clusterRooms(
  ctx: ChatContext,
  session: Session,
  listed: readonly RoomCount[],
): RoomInfo[] {
  const joined = new Set<string>();
  for (const room of session.rooms) joined.add(room.key);
  const counted = new Map<string, number>();
  for (const r of listed) counted.set(r.room, r.count);
  const lobby = ctx.lobby;
  const rooms: RoomInfo[] = [
    {
      name: lobby.name,
      count: Math.max(counted.get(lobby.key) ?? 0, lobby.size),
      joined: joined.has(lobby.key),
    },
  ];
  for (const r of listed) {
    if (r.room === lobby.key) continue;
    const here = ctx.rooms.keyed(r.room);
    // The list may be a second old: never fewer than this node's own members (the lobby's too).
    const count = Math.max(r.count, here?.size ?? 0);
    rooms.push({ name: here?.name ?? r.name, count, joined: joined.has(r.room) });
  }
  // A list cut at the bound says nothing of the rooms it left out. Counted here as far as
  // this node knows: empty everywhere (declared), or joined or made here since the list
  // was read.
  if (listed.length < MAX_ROOM_LIST) {
    for (const room of ctx.rooms.all()) {
      if (room === lobby || counted.has(room.key)) continue;
      rooms.push({ name: room.name, count: room.size, joined: joined.has(room.key) });
    }
  }
  return rooms;
}
