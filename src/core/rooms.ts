/**
 * Rooms besides the lobby (capability "rooms"): the registry of rooms keyed by
 * the look-alike key their names share with nicknames, so "Physics" and
 * "physіcs" (Cyrillic і) are one room, shown as first created. The lobby is
 * always here; declared rooms (config file) exist even when empty; any other
 * room is made by its first join and removed when its last member leaves.
 */
import { ErrorCode, type ErrorCodeValue } from '../protocol/codes.js';
import { lookalikeKey } from './lookalike.js';
import { checkName, lookupKey, type NicknameCheck } from './nickname.js';
import { Room } from './room.js';
import type { Session } from './session.js';

export const MAX_ROOM_NAME_LENGTH = 64;

/** A room the operator declares up front, with its own capacity. */
export interface DeclaredRoom {
  readonly name: string;
  readonly capacity: number;
}

export interface RoomSettings {
  /** Capacity of rooms made by a join (the lobby's is --max-users). */
  roomCapacity?: number;
  /** Whether a join may make a room that does not exist. */
  createRooms?: boolean;
  /** Rooms one session may be in at once, the lobby included. */
  maxRoomsPerClient?: number;
  /** Rooms that may exist at once, declared ones included, the lobby not. */
  maxRooms?: number;
  declared?: readonly DeclaredRoom[];
}

export interface RoomRefusal {
  readonly code: ErrorCodeValue;
  readonly message: string;
  /** The room already joined (1016), by its name: the one asked for may be a look-alike. */
  readonly room?: string;
}

/** Room names follow the nickname rules (nickname.ts), up to 64 characters. */
export function checkRoomName(raw: string): NicknameCheck {
  return checkName(raw, MAX_ROOM_NAME_LENGTH, 'room name');
}

export function roomKey(name: string): string {
  return lookalikeKey(name);
}

/**
 * `rooms` in the order ROOMS lists them: `lobby` first, then by `count`, most first, of
 * rooms with as many in the order given. A room list cut at its bound keeps the rooms people
 * are in: one member making rooms as fast as flood control lets it had pushed every room made
 * after them out of the list, and out of the web page's "More rooms".
 */
export function byMembers<T>(rooms: readonly T[], lobby: T, count: (room: T) => number): T[] {
  const rest = rooms.filter((r) => r !== lobby);
  // Stable: Array.prototype.sort keeps the order of equal counts.
  rest.sort((a, b) => count(b) - count(a));
  return rooms.includes(lobby) ? [lobby, ...rest] : rest;
}

export class Rooms {
  private readonly byKey = new Map<string, Room>();
  /** By the name as shown, which is what events carry: publishing costs no key. */
  private readonly byName = new Map<string, Room>();
  private declaredKeys: ReadonlySet<string> = new Set();
  /**
   * The highest id any removed room had reached. A room made again starts
   * above it, so an id a client saw in a room is never handed out there again.
   */
  private idFloor = 0;
  private roomCapacity = 100;
  private createRooms = true;
  private maxRoomsPerClient = 20;
  private maxRooms = Number.POSITIVE_INFINITY;
  /**
   * New rooms admitted but not yet registered (a join on a cluster node waits
   * for Redis in between), by key with the joins under way: each holds one
   * place under maxRooms until `add` registers it or `abandon` gives it up.
   */
  private readonly making = new Map<string, number>();
  /**
   * Whether `session` may make a room now (Chat: a budget per address, so that one client
   * cannot make thousands of rooms and, with a chat in each, push every room's history past
   * --history-max-rooms).
   */
  mayCreate: (session: Session) => boolean = () => true;
  /** Whether a new room may not have this name (it holds a banned word). */
  nameForbidden: (name: string) => boolean = () => false;

  constructor(
    readonly lobby: Room,
    settings: RoomSettings = {},
  ) {
    this.insert(lobby);
    this.configure(settings);
  }

  /** Applies to joins from now on; nobody is moved out of a room. */
  configure(settings: RoomSettings): void {
    if (settings.roomCapacity !== undefined) this.roomCapacity = settings.roomCapacity;
    if (settings.createRooms !== undefined) this.createRooms = settings.createRooms;
    if (settings.maxRoomsPerClient !== undefined)
      this.maxRoomsPerClient = settings.maxRoomsPerClient;
    if (settings.maxRooms !== undefined) this.maxRooms = settings.maxRooms;
    if (settings.declared !== undefined) {
      const keys = new Set<string>();
      for (const declared of settings.declared) {
        const key = roomKey(declared.name);
        // The lobby's capacity is --max-users; the config file refuses to declare it.
        if (this.byKey.get(key) === this.lobby) continue;
        keys.add(key);
        const room = this.byKey.get(key);
        if (room === undefined)
          this.insert(new Room(declared.name, declared.capacity, this.idFloor));
        else room.capacity = declared.capacity;
      }
      const before = this.declaredKeys;
      this.declaredKeys = keys;
      for (const key of before) {
        const room = this.byKey.get(key);
        if (!keys.has(key) && room !== undefined) this.dropIfEmpty(room);
      }
    }
    for (const [key, room] of this.byKey) {
      if (room !== this.lobby && !this.declaredKeys.has(key)) room.capacity = this.roomCapacity;
    }
  }

  /** The room a client names, in any look-alike spelling. */
  find(name: string): Room | undefined {
    const room = this.byName.get(name);
    if (room !== undefined) return room;
    // Names come from clients (CHAT, USERS, PART, since), as long as a frame: too long is none.
    const key = lookupKey(name);
    return key === undefined ? undefined : this.byKey.get(key);
  }

  /** The room an event names (always the name as shown). */
  named(name: string): Room | undefined {
    return this.byName.get(name);
  }

  /** The room stored under a look-alike key (what a cluster's broker names rooms by). */
  keyed(key: string): Room | undefined {
    return this.byKey.get(key);
  }

  /**
   * The room `name` names, or a new one (registered by `add`) whatever the
   * settings: on a node of a cluster, one that exists on another node.
   */
  room(name: string): Room {
    return this.find(name) ?? new Room(name, this.roomCapacity, this.idFloor);
  }

  /** Every room that exists, the lobby first, then in order of creation. */
  all(): IterableIterator<Room> {
    return this.byKey.values();
  }

  private listed: { at: number; rooms: Room[] } | undefined;

  /**
   * The first `most` rooms as ROOMS lists them: the lobby, then the most members first (of
   * rooms with as many, the older first). Sorted again once a room is made or removed, else
   * at most once a second as members come and go: ROOMS may be asked for at the flood limit
   * by every connection, and rooms can be thousands.
   */
  mostJoined(most: number, now: number): readonly Room[] {
    if (this.listed === undefined || now - this.listed.at >= 1_000 || now < this.listed.at) {
      const rooms = [...this.byKey.values()];
      this.listed = { at: now, rooms: byMembers(rooms, this.lobby, (r) => r.size) };
    }
    return this.listed.rooms.slice(0, most);
  }

  /**
   * Whether `session` may join the room `raw` names: the room to add it to
   * (not yet registered if new; `add` registers it), or why not.
   */
  admit(session: Session, raw: string): Room | RoomRefusal {
    const checked = checkRoomName(raw);
    if (!checked.ok) return { code: ErrorCode.INVALID_ROOM_NAME, message: checked.reason };
    const name = checked.nickname;
    const room = this.find(name);
    if (room !== undefined && session.rooms.has(room)) {
      return {
        code: ErrorCode.ALREADY_IN_ROOM,
        message: `you are already in ${room.name}`,
        room: room.name,
      };
    }
    if (session.rooms.size >= this.maxRoomsPerClient) {
      return {
        code: ErrorCode.TOO_MANY_ROOMS,
        message: `you are in ${this.maxRoomsPerClient} rooms, the most allowed`,
      };
    }
    if (room === undefined) {
      if (!this.createRooms) return { code: ErrorCode.NO_SUCH_ROOM, message: 'no such room' };
      // Listed to everyone (ROOMS, the web page's "More rooms"): held to the chat rule.
      if (this.nameForbidden(name)) {
        return { code: ErrorCode.INVALID_ROOM_NAME, message: 'room name contains a banned word' };
      }
      const key = roomKey(name);
      const making = this.making.get(key);
      if (making === undefined && this.count >= this.maxRooms) {
        return {
          code: ErrorCode.TOO_MANY_ROOMS_ON_SERVER,
          message: `the server has ${this.maxRooms} rooms, the most allowed; join one that exists`,
        };
      }
      if (making === undefined && !this.mayCreate(session)) {
        return {
          code: ErrorCode.RATE_LIMITED,
          message: 'too many new rooms from your address; join one that exists, or wait a while',
        };
      }
      this.making.set(key, (making ?? 0) + 1);
      return new Room(name, this.roomCapacity, this.idFloor);
    }
    if (room.isFull) return { code: ErrorCode.ROOM_FULL, message: `${room.name} is full` };
    return room;
  }

  /**
   * Rooms that exist, the lobby not counted, and new ones on their way in:
   * what --max-rooms bounds.
   */
  get count(): number {
    let count = this.byKey.size - 1;
    for (const key of this.making.keys()) if (!this.byKey.has(key)) count++;
    return count;
  }

  /** Adds a member (registering the room if `admit` just made it). */
  add(session: Session, room: Room): void {
    this.settle(room);
    if (this.byName.get(room.name) !== room) this.insert(room);
    room.add(session);
    session.rooms.add(room);
  }

  /**
   * A room `admit` returned that the join will not enter after all (refused
   * by the cluster, or the joiner left): a new room's place under
   * --max-rooms is free again. Harmless for a room that existed.
   */
  abandon(room: Room): void {
    this.settle(room);
  }

  private settle(room: Room): void {
    const making = this.making.get(room.key);
    if (making === undefined) return;
    if (making > 1) this.making.set(room.key, making - 1);
    else this.making.delete(room.key);
  }

  /** Removes a member; an undeclared room goes with its last member. */
  remove(session: Session, room: Room): void {
    room.remove(session);
    session.rooms.delete(room);
    session.leftRoom(room.name);
    this.dropIfEmpty(room);
  }

  private insert(room: Room): void {
    this.byKey.set(room.key, room);
    this.listed = undefined;
    this.byName.set(room.name, room);
  }

  private dropIfEmpty(room: Room): void {
    if (room === this.lobby || room.size > 0) return;
    const key = room.key;
    if (this.declaredKeys.has(key)) return;
    this.byKey.delete(key);
    this.listed = undefined;
    this.byName.delete(room.name);
    this.idFloor = Math.max(this.idFloor, room.lastId);
  }
}
