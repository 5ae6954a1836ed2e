/** The operators' requests: OPER, KICK, BAN, UNBAN and BANS, and how a ban is enforced. */
import { Cmd, ErrorCode } from '../protocol/codes.js';
import { atMostChars, clip } from '../protocol/text.js';
import { parseAddressMask } from './addresses.js';
import { ANY_TIME, type Ban, banMatches, parseMask, type Saved } from './bans.js';
import type { Broker, NodeNotice } from './broker.js';
import { type ChatContext, type Handler, refuse, tooLong } from './command-context.js';
import { Delivery, type SessionRef } from './events.js';
import { type Removal, removalDetail, removedAs } from './moderation.js';
import { setNewest } from './newest.js';
import {
  addressLike,
  addressSeries,
  checkNickname,
  MAX_UNITS_PER_CHARACTER,
  nicknameKey,
  nicknameLookupKey,
} from './nickname.js';
import type { Presence } from './presence.js';
import type { Session } from './session.js';

/** Longest BAN mask: longer than any nickname or IPv6 CIDR, so nothing longer could match. */
const MAX_MASK_LENGTH = 64;

/**
 * The ban list is kept in memory, checked at every accept, rewritten whole on each change
 * and sent whole in each "98": bounded so that its largest "98" (every ban's text escaped
 * to six bytes a character: about 1.8 KB each) stays under a megabyte, what a client
 * reads as one line (the client library's cap) and --max-queue's default.
 */
export const MAX_BANS = 500;
/** A ban's reason is kept and sent with the list: shorter than a chat's. */
export const MAX_BAN_REASON = 200;

/** The session's operator name, or undefined after refusing it with 1010. */
function operatorOf(ctx: ChatContext, session: Session, cmd: string): string | undefined {
  if (session.operator === undefined) {
    const { nickname, address } = session;
    ctx.refusals.log(
      'not-operator',
      (held) =>
        ctx.log.warn(
          { nickname, ip: address.ip, cmd, ...held },
          'moderation request from a non-operator, refused',
        ),
      address.ip,
    );
    refuse(session, ErrorCode.NOT_AUTHORIZED, 'you are not an operator', cmd);
  }
  return session.operator?.name;
}

/**
 * Announces a removal to the room (members with "moderation"), then disconnects the member.
 * Returns the key of the room it was announced in, if any.
 */
export function removeMember(
  ctx: ChatContext,
  target: Session,
  action: 'kick' | 'ban',
  by: string,
  reason: string,
  seconds: number | undefined,
  asker?: SessionRef,
): string | undefined {
  // Announced where the target is seen: the lobby, or else its first room.
  const room = target.room ?? target.rooms.values().next().value;
  const detail = removalDetail(action, by, reason, seconds);
  ctx.log.warn(
    { nickname: target.nickname, ip: target.address.ip, by, reason, seconds },
    `${target.nickname} was ${detail}`,
  );
  // The target is excluded as the event's origin: it is told by its own "90" instead.
  if (room !== undefined) {
    ctx.publish(
      {
        type: 'moderated',
        room: room.name,
        action,
        nickname: target.nickname,
        by,
        reason,
        seconds,
        asker,
      },
      target,
    );
  }
  // For its reconnect, should its connection be dead: a ban would not refuse one from
  // another address or after it ended, nor say why.
  // (On a cluster, its node kept it in Presence before freeing the member: keepRemoval.)
  const token = target.resumeToken;
  if (token !== undefined && ctx.cluster === undefined) {
    ctx.removals.remember(token, { action, detail }, ctx.now());
  }
  tellRemoved(ctx, target, { action, detail });
  return room?.key;
}

/** Ends the connection of a session a KICK or BAN removed, saying which (2005 or 2006). */
export function tellRemoved(ctx: ChatContext, session: Session, removal: Removal): void {
  ctx.disconnect(session, removedAs(removal.action), removal.detail);
}

/**
 * On a cluster, keeps why the member holding `token` is being removed where a resume through
 * any node finds it (Presence), or else on this node; never rejects. Done before the member
 * is freed: a resume that finds it freed then finds this too.
 */
export async function keepRemoval(
  ctx: ChatContext,
  presence: Presence,
  token: string,
  removal: Removal,
  nickname: string | undefined,
): Promise<void> {
  try {
    await presence.recordRemoval(token, removal);
  } catch (err) {
    ctx.log.warn({ err, nickname }, 'could not record a removal in the cluster');
    ctx.removals.remember(token, removal, ctx.now());
  }
}

/**
 * A KICK's "99" is its answer: the operator gets it also when it is not in the room it was
 * announced in (`announcedIn`, a key), where the other members of that room got it.
 */
export function tellKicker(
  operator: Session,
  announcedIn: string | undefined,
  notice: { readonly nickname: string; readonly by: string; readonly reason: string },
): void {
  if (operator.state !== 'joined') return;
  for (const room of operator.rooms) if (room.key === announcedIn) return;
  sendKickAnswer(operator, notice);
}

function sendKickAnswer(operator: Session, notice: KickAnswer): void {
  const { nickname, by, reason } = notice;
  const room = operator.room?.name ?? '';
  operator.send(
    new Delivery({
      type: 'moderated',
      room,
      action: 'kick',
      nickname,
      by,
      reason,
      seconds: undefined,
    }),
  );
}

/** How many kick answers one operator session remembers (KickAnswers), the oldest dropped. */
const KICK_ANSWERS_KEPT = 16;

type KickAnswer = { readonly nickname: string; readonly by: string; readonly reason: string };

function kickAnswerKey(kick: KickAnswer): string {
  return `${kick.nickname}\u0000${kick.by}\u0000${kick.reason}`;
}

function rememberKickAnswer(session: Session, key: string, how: 'shown' | 'told'): void {
  session.kickAnswers ??= new Map();
  setNewest(session.kickAnswers, key, how, KICK_ANSWERS_KEPT);
}

/**
 * On a cluster a KICK's "99" reaches its operator two ways that race: the room's copy
 * (if the operator is in the room when it reaches the operator's node) and the 'kicked'
 * notice from the target's node. Being in the room when the notice arrives says
 * nothing of the copy: the operator may have joined just after it passed, or it may
 * still be held behind a gap. So the operator's session remembers which came first
 * and lets the other through only if nothing did. Here, the room's copy, to `member`:
 * false when the notice told it already. Only the copy's `asker` (on this `node`)
 * remembers: another session of the same operator name gets the copy as any member does.
 */
export function kickShownInRoom(
  member: Session,
  node: string,
  kick: KickAnswer & { readonly asker?: SessionRef | undefined },
): boolean {
  const asker = kick.asker;
  if (asker === undefined || asker.node !== node || asker.member !== member.presenceId) {
    return true;
  }
  const key = kickAnswerKey(kick);
  if (member.kickAnswers?.get(key) === 'told') {
    member.kickAnswers.delete(key);
    return false;
  }
  rememberKickAnswer(member, key, 'shown');
  return true;
}

/** The 'kicked' notice on a cluster: see kickShownInRoom. */
export function answerKicker(operator: Session, kick: KickAnswer): void {
  if (operator.state !== 'joined') return;
  const key = kickAnswerKey(kick);
  if (operator.kickAnswers?.get(key) === 'shown') {
    operator.kickAnswers.delete(key);
    return;
  }
  sendKickAnswer(operator, kick);
  // The room's copy may still come, also to a room the operator joins after this.
  rememberKickAnswer(operator, key, 'told');
}

/** The "98": the whole list, and, answering an UNBAN, whether it lifted a ban. */
function banList(
  ctx: ChatContext,
  session: Session,
  told: { removed?: boolean; unsaved?: string } = {},
): void {
  session.reply({ type: 'ban-list', bans: ctx.bans.list(ctx.now()), ...told });
}

/**
 * OPER "92" {name, password} -> "93" {name}; wrong name or password -> "90" 1010.
 * Failures are logged with the address; the password never is.
 */
export const oper: Handler<typeof Cmd.OPER> = (ctx, session, req) => {
  const attempt = ctx.operAttempt(session.address.ip);
  if (attempt !== 'ok') {
    const where = attempt === 'address' ? 'from this address' : 'on this server';
    const { nickname, address } = session;
    ctx.refusals.log(
      'oper-unchecked',
      (held) =>
        ctx.log.warn(
          { nickname, ip: address.ip, operName: clip(req.name), ...held },
          `OPER refused unchecked: too many attempts ${where}`,
        ),
      address.ip,
    );
    refuse(
      session,
      ErrorCode.NOT_AUTHORIZED,
      attempt === 'address'
        ? 'too many OPER attempts from this address; try again in ten seconds'
        : 'too many OPER attempts on this server; try again in a few seconds',
      req.cmd,
    );
    return;
  }
  const operator = ctx.operators.find((o) => o.name === req.name);
  // Verify even for an unknown name, so the time taken does not tell which names exist.
  const ok =
    (operator ?? ctx.operators[0])?.verify(req.password) === true && operator !== undefined;
  if (!ok) {
    ctx.log.warn(
      { nickname: session.nickname, ip: session.address.ip, operName: clip(req.name) },
      'failed OPER',
    );
    refuse(session, ErrorCode.NOT_AUTHORIZED, 'wrong operator name or password', req.cmd);
    return;
  }
  session.operator = operator;
  ctx.operSucceeded(session.address.ip);
  ctx.operated(session);
  ctx.log.info(
    { nickname: session.nickname, ip: session.address.ip, operName: operator.name },
    'OPER',
  );
  session.reply({ type: 'oper-ok', name: operator.name });
};

/**
 * KICK "94" {nickname, reason?} (operators): the member is disconnected;
 * "99" to members with "moderation", then "30" to everyone. No such member -> 1011.
 */
export const kick: Handler<typeof Cmd.KICK> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  if (tooLong(ctx, session, req.reason ?? '', req.cmd)) return;
  // Most often a slip of the keyboard, which would close the operator's own connection.
  const own = session.nickname;
  if (own !== undefined && nicknameLookupKey(req.nickname) === nicknameKey(own)) {
    refuse(session, ErrorCode.INVALID_FIELD, 'you cannot kick yourself', req.cmd);
    return;
  }
  const target = ctx.find(req.nickname);
  const reason = req.reason ?? '';
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    // Removed by the node Presence has the member on, only if it still does there (a resume
    // on another node may be taking it over), else followed to where it went; the whole
    // cluster sees the "99" and "30".
    const notice = (member: string, nickname: string): NodeNotice => ({
      type: 'remove',
      member,
      action: 'kick',
      by,
      reason,
      seconds: undefined,
      nickname,
      hops: 0,
      asker: { node: cluster.presence.node, member: session.presenceId, nickname: req.nickname },
    });
    // A call, not a property read: the session may close while the notice is sent.
    const closed = () => session.state === 'closed';
    if (target !== undefined) {
      void cluster.broker.notify(cluster.presence.node, notice(target.presenceId, target.nickname));
      return;
    }
    ctx.run(
      session,
      cluster.presence.find(req.nickname).then(async (member) => {
        if (closed()) return;
        if (member === undefined) {
          refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(req.nickname), req.cmd);
          return;
        }
        const heard = await cluster.broker.notify(member.node, notice(member.id, member.nickname));
        // Nothing else would answer it: the member's node is gone (its members leave once
        // the others reap it) or was not listening for a moment; or Redis's answer was lost,
        // and the kick may have gone out all the same.
        if (heard !== true && !closed()) kickUnheard(session, req.nickname, heard);
      }),
    );
    return;
  }
  if (target === undefined) {
    refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(req.nickname), req.cmd);
    return;
  }
  const announcedIn = removeMember(ctx, target, 'kick', by, reason, undefined);
  tellKicker(session, announcedIn, { nickname: target.nickname, by, reason });
};

/**
 * A KICK whose removal found nobody on the node it was sent to (the member left, or
 * moved on too often): its operator gets what one process answers at once.
 */
export function kickMissed(session: Session, nickname: string): void {
  refuse(session, ErrorCode.NO_SUCH_USER, noSuchUser(nickname), Cmd.KICK);
}

/**
 * A KICK no node took (`heard` false: nobody listened; undefined: Redis's answer was lost,
 * and the kick may have gone out): 1022, to try again.
 */
export function kickUnheard(session: Session, nickname: string, heard: false | undefined): void {
  const detail =
    heard === false
      ? `the server "${clip(nickname)}" is on did not answer; nothing was done: try again in a few seconds`
      : `the kick of "${clip(nickname)}" may not have reached its server: try again in a few seconds`;
  refuse(session, ErrorCode.TRY_AGAIN, detail, Cmd.KICK);
}

function noSuchUser(nickname: string): string {
  return `no member is called "${clip(nickname)}"`;
}

/**
 * BAN "95" {mask, seconds?, reason?} (operators) -> "98" the whole list; then
 * every matching member is removed as by KICK (notice action "ban").
 */
export const ban: Handler<typeof Cmd.BAN> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  const mask = req.mask.trim();
  if (mask === '' || mask.length > MAX_MASK_LENGTH) {
    refuse(
      session,
      ErrorCode.INVALID_FIELD,
      `"mask" must be 1 to ${MAX_MASK_LENGTH} characters`,
      req.cmd,
    );
    return;
  }
  const reason = req.reason ?? '';
  if (tooLong(ctx, session, reason, req.cmd)) return;
  if (!atMostChars(reason, MAX_BAN_REASON)) {
    refuse(
      session,
      ErrorCode.MESSAGE_TOO_LONG,
      `a ban's reason is at most ${MAX_BAN_REASON} characters`,
      req.cmd,
    );
    return;
  }
  // "127.0.0.01", "[::1]" or "10.*" is no address, and a nickname ban would leave the address
  // in; nor is a ban of a name no nickname may be (spaces, 33 letters) any ban at all.
  const address = parseAddressMask(mask) !== undefined;
  if (!address && (addressLike(mask) || addressSeries(mask))) {
    refuse(
      session,
      ErrorCode.INVALID_FIELD,
      `"${clip(mask)}" is not an address or network: write a.b.c.d, a.b.c.d/n or an IPv6 one`,
      req.cmd,
    );
    return;
  }
  if (!address && !checkNickname(mask).ok) {
    refuse(
      session,
      ErrorCode.INVALID_FIELD,
      `"${clip(mask)}" is neither an address nor a nickname anyone may have`,
      req.cmd,
    );
    return;
  }
  const now = ctx.now();
  // An operator's own ban would remove it, and lock it out until bans.json is edited by hand
  // (a ban on 0.0.0.0/0 locks out everyone): refused, whoever else it would match.
  if (banMatches({ mask, by, reason, expires: null }, session.nickname, session.address.ip, now)) {
    refuse(session, ErrorCode.INVALID_FIELD, 'this ban would match you yourself', req.cmd);
    return;
  }
  if (listFull(ctx, mask, now)) {
    refuse(
      session,
      ErrorCode.TOO_MANY_BANS,
      `the ban list is full (${MAX_BANS} bans); UNBAN one first`,
      req.cmd,
    );
    return;
  }
  const entry = {
    mask,
    by,
    reason,
    expires: req.seconds === undefined ? null : now + req.seconds * 1000,
  };
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(session, banInCluster(ctx, cluster, session, entry, req.seconds));
    return;
  }
  const unsaved = unsavedReason(ctx, ctx.bans.add(entry, now));
  ctx.log.warn({ mask, by, reason, seconds: req.seconds, byIp: session.address.ip }, `ban ${mask}`);
  banList(ctx, session, { unsaved });
  enforceBan(ctx, entry, req.seconds);
};

/**
 * Whether a ban on `mask` would add one past MAX_BANS (a ban on a mask already banned
 * replaces that one). On a cluster this node's copy of the list is what is counted, so
 * bans racing on several nodes may pass the cap by as many.
 */
function listFull(ctx: ChatContext, mask: string, now: number): boolean {
  return ctx.bans.list(now).length >= MAX_BANS && ctx.bans.adds(mask, now);
}

/**
 * BAN on a node of a cluster: the ban is stored where every node reads it,
 * enforced here at once and by the others when they hear of it, and each
 * node removes its own members that match.
 */
async function banInCluster(
  ctx: ChatContext,
  cluster: { readonly presence: Presence; readonly broker: Broker },
  session: Session,
  entry: Ban,
  seconds: number | undefined,
): Promise<void> {
  const now = ctx.now();
  const ban = await cluster.presence.ban(parseMask(entry.mask).key, entry, now, seconds);
  ctx.log.warn(
    { mask: entry.mask, by: entry.by, reason: entry.reason, seconds, byIp: session.address.ip },
    `ban ${entry.mask}`,
  );
  ctx.bans.replace(await cluster.presence.bans());
  cluster.broker.notify(undefined, { type: 'banned', ban, seconds });
  if (session.state !== 'closed') banList(ctx, session);
  enforceBan(ctx, ban, seconds);
}

/**
 * Removes this node's members that a new ban matches: in force as it is made, whatever this
 * node's clock says (on a cluster Redis's clock dates its end).
 */
export function enforceBan(ctx: ChatContext, ban: Ban, seconds: number | undefined): void {
  for (const member of ctx.members()) {
    if (
      member.state === 'joined' &&
      banMatches(ban, member.nickname, member.address.ip, ANY_TIME)
    ) {
      removeBanned(ctx, member, ban, seconds);
    }
  }
}

/** The ban, if any, on a member's nickname or address. */
function banOn(ctx: ChatContext, session: Session, now: number): Ban | undefined {
  return (
    ctx.bans.bansNickname(session.nickname, now) ?? ctx.bans.bansAddress(session.address.ip, now)
  );
}

/**
 * On a cluster, a member that has just joined or resumed is checked against the bans
 * again: a ban that reached this node while its claim or resume was in Redis found no
 * member here to remove, and the member it took over may have been removed too late.
 */
export function recheckBans(ctx: ChatContext, session: Session): void {
  if (session.state !== 'joined') return;
  const now = ctx.now();
  const ban = banOn(ctx, session, now);
  if (ban !== undefined) removeBanned(ctx, session, ban, secondsLeft(ban, now));
}

/**
 * A member taken over by a resume whose nickname or address was banned while it was away
 * (its node paused, or cut off, missed the removal): removed here and now, as the ban would
 * have removed it, before it is let back in. True if it was.
 */
export function removedIfBanned(ctx: ChatContext, session: Session): boolean {
  const now = ctx.now();
  const ban = banOn(ctx, session, now);
  if (ban === undefined) return false;
  removeMember(ctx, session, 'ban', ban.by, ban.reason, secondsLeft(ban, now));
  return true;
}

/** What is left of a ban, as BAN's `seconds` (undefined: until unbanned). */
export function secondsLeft(ban: Ban, now: number): number | undefined {
  return ban.expires === null ? undefined : Math.max(1, Math.ceil((ban.expires - now) / 1000));
}

function removeBanned(
  ctx: ChatContext,
  member: Session,
  ban: Ban,
  seconds: number | undefined,
): void {
  const cluster = ctx.cluster;
  if (cluster === undefined) {
    removeMember(ctx, member, 'ban', ban.by, ban.reason, seconds);
    return;
  }
  // As a KICK: removed here only while Presence still has the member here, else followed
  // to the node a resume moved it to, so a ban racing a resume misses neither.
  cluster.broker.notify(cluster.presence.node, {
    type: 'remove',
    member: member.presenceId,
    action: 'ban',
    by: ban.by,
    reason: ban.reason,
    seconds,
    nickname: member.nickname,
    hops: 0,
  });
}

/**
 * The longest mask UNBAN folds: as many UTF-16 units for each a BAN's mask may hold as for
 * names (nickname.ts). Folding normalises, which sorts a run of combining marks in time by
 * the square of its length; a longer mask is no spelling of a banned one, and lifts nothing.
 */
const MAX_UNBAN_MASK_LENGTH = MAX_MASK_LENGTH * MAX_UNITS_PER_CHARACTER;

/** UNBAN "96" {mask} (operators) -> "98" the whole list. */
export const unban: Handler<typeof Cmd.UNBAN> = (ctx, session, req) => {
  const by = operatorOf(ctx, session, req.cmd);
  if (by === undefined) return;
  if (req.mask.trim().length > MAX_UNBAN_MASK_LENGTH) {
    logUnban(ctx, session, req.mask, by, false);
    banList(ctx, session, { removed: false });
    return;
  }
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(
      session,
      (async () => {
        const found = await cluster.presence.unban(parseMask(req.mask.trim()).key);
        logUnban(ctx, session, req.mask, by, found);
        ctx.bans.replace(await cluster.presence.bans());
        cluster.broker.notify(undefined, { type: 'unbanned', mask: req.mask });
        if (session.state !== 'closed') banList(ctx, session, { removed: found });
      })(),
    );
    return;
  }
  const now = ctx.now();
  const removal = ctx.bans.remove(req.mask, now);
  const unsaved = unsavedReason(ctx, removal);
  logUnban(ctx, session, req.mask, by, removal.found);
  banList(ctx, session, { removed: removal.found, unsaved });
};

/** The operator's line for an UNBAN: `byIp` is its address (`ip` is a member's, elsewhere). */
function logUnban(
  ctx: ChatContext,
  session: Session,
  mask: string,
  by: string,
  found: boolean,
): void {
  ctx.log.warn({ mask: clip(mask), by, found, byIp: session.address.ip }, `unban ${clip(mask)}`);
}

/** BANS "97" (operators) -> "98" {bans: [{mask, by, reason, expires}]}. */
export const bans: Handler<typeof Cmd.BANS> = (ctx, session, req) => {
  if (operatorOf(ctx, session, req.cmd) === undefined) return;
  const cluster = ctx.cluster;
  if (cluster !== undefined) {
    ctx.run(
      session,
      cluster.presence.bans().then((list) => {
        ctx.bans.replace(list);
        if (session.state !== 'closed') banList(ctx, session);
      }),
    );
    return;
  }
  banList(ctx, session);
};

/**
 * A failed write keeps the change in memory: it applies until a restart. Returns what the
 * operator is told then (the "98"'s `unsaved`), so a ban it was told of is not lost unawares.
 */
function unsavedReason(ctx: ChatContext, { failure }: Saved): string | undefined {
  if (failure === undefined) return undefined;
  ctx.log.error(
    { err: failure },
    'could not save the ban list; the change applies until a restart',
  );
  const code = failure instanceof Error && 'code' in failure ? failure.code : undefined;
  const why =
    typeof code === 'string' ? code : failure instanceof Error ? clip(failure.message) : undefined;
  return `the ban list could not be saved${why === undefined ? '' : ` (${why})`}: this change holds only until the server restarts`;
}
