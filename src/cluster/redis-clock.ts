import type { Redis } from 'ioredis';

/**
 * How far this node's reading of Redis's time may drift from a new sample before it takes
 * the sample. What the clock times (a chat's `at`, a timed ban's end, history's age
 * retention) is shown in seconds and kept for minutes to days; moving the clock by a few
 * milliseconds at each sample would only make times jitter.
 */
export const CLOCK_TOLERANCE_MS = 1_000;
/** A sample whose round trip took longer than this says too little of when TIME ran. */
const MAX_ROUND_TRIP_MS = CLOCK_TOLERANCE_MS;
/**
 * A slower sample still places TIME within half its round trip: seconds off, where the
 * machine's own clock may be a month off. Taken while no faster one has been (a Redis that
 * slow for good would otherwise leave the node on its own clock for good, dating chats that
 * another node then prunes by age); slower still, heartbeats time out first.
 */
const LOOSE_ROUND_TRIP_MS = 10_000;
/** How often the clock reads TIME again: a node's own clock may be stepped (NTP, by hand). */
export const CLOCK_SYNC_MS = 30_000;
/** How soon it tries again while no sample has been good enough yet. */
export const CLOCK_RETRY_MS = 1_000;

/**
 * The cluster's wall clock: this node's clock, moved by how far it is off Redis's (TIME).
 * Every node times what other nodes compare with it (chats' times, bans' ends, the ages
 * history is pruned by) by the same clock, so a node whose own clock is off by a month
 * neither prunes every room's history nor ends other nodes' bans early. A node whose
 * clock agrees with Redis's within CLOCK_TOLERANCE_MS keeps its own exactly.
 */
export class RedisClock {
  private offset = 0;
  private good = false;
  /** How far the offset held may be wrong: half its sample's round trip when that was slow, else 0. */
  private doubt = 0;
  /** This node's clock, and the monotonic one, in the middle of the last good sample. */
  private sampledLocal = 0;
  private sampledMono = 0;
  /** A sample asked for at once, the machine's clock having stepped. */
  private resampling = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Which start() the samples under way belong to: one stopped schedules no more. */
  private runs = 0;

  constructor(
    private readonly redis: Pick<Redis, 'time'>,
    private readonly local: () => number = Date.now,
    /**
     * Called once, at the first sample good enough to judge by, with the offset taken and
     * how far it may be wrong when that sample was slow (ms; 0 when not).
     */
    private readonly onJudged?: (skew: number, doubt: number) => void,
    private readonly mono: () => number = () => performance.now(),
  ) {}

  /**
   * Milliseconds since the epoch, in Redis's time. Should the machine's clock step (NTP, by
   * hand) between samples, the time goes on from the last sample by the monotonic clock
   * until the next one, asked for at once: a clock stepped a day ahead would otherwise prune
   * a day of every room's history, and date chats a day late.
   */
  readonly now = (): number => {
    const local = this.local();
    if (!this.good) return local + this.offset;
    const expected = this.sampledLocal + (this.mono() - this.sampledMono);
    if (Math.abs(local - expected) <= CLOCK_TOLERANCE_MS) return local + this.offset;
    if (!this.resampling) {
      this.resampling = true;
      this.sync()
        .catch(() => false)
        .finally(() => {
          this.resampling = false;
        });
    }
    // Whole milliseconds, as Date.now gives: what is timed by it is stored, and shown.
    return Math.round(expected) + this.offset;
  };

  /** How far this node's clock is behind Redis's (ms; negative: ahead), as last taken. */
  get skew(): number {
    return this.offset;
  }

  /**
   * Whether a sample has been good enough to judge by. Until then `now` is this node's
   * own clock, which may be far off: what would act on a wrong time for good (pruning
   * history by age) waits for this.
   */
  get judged(): boolean {
    return this.good;
  }

  /**
   * Reads TIME once and takes the offset if it is off by more than the tolerance (a slow
   * sample: see LOOSE_ROUND_TRIP_MS). Answers whether the sample was good enough to judge
   * by; rejects as the command does.
   */
  async sync(): Promise<boolean> {
    const sent = this.local();
    const sentMono = this.mono();
    const [seconds, micros] = await this.redis.time();
    const back = this.local();
    const backMono = this.mono();
    const roundTrip = backMono - sentMono;
    // The machine's clock stepped meanwhile: its readings place TIME nowhere.
    if (Math.abs(back - sent - roundTrip) > CLOCK_TOLERANCE_MS) return false;
    const loose = roundTrip > MAX_ROUND_TRIP_MS;
    const heldLoose = this.doubt > 0;
    if (roundTrip > LOOSE_ROUND_TRIP_MS || (loose && this.good && !heldLoose)) return false;
    const redisMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    // TIME ran somewhere in the round trip: the middle is wrong by half of it at most.
    const middle = Math.round((sent + back) / 2);
    const half = loose ? roundTrip / 2 : 0;
    // A slow sample that this node's own clock agrees with, within what the sample is known
    // to, says nothing against that clock: it is kept exactly, rather than moved by up to
    // half the round trip (an NTP-set clock would otherwise be put off by hundreds of ms).
    // It may then be off by what the sample saw and the sample's own doubt together: that
    // is the doubt told and compared, not the half round trip alone.
    const seen = redisMs - middle;
    const kept = loose && Math.abs(seen) <= half + CLOCK_TOLERANCE_MS;
    const offset = kept ? 0 : seen;
    const doubt = kept ? Math.abs(seen) + half : half;
    if (heldLoose && !loose) {
      // A fast sample after slow ones, judged afresh: a clock that agrees is kept exactly.
      this.offset = Math.abs(offset) > CLOCK_TOLERANCE_MS ? offset : 0;
      this.doubt = 0;
    } else if (heldLoose && loose) {
      // Of two slow ones the one placed closer, or a later one where both cannot be right (the
      // machine's clock was set meanwhile): times would otherwise jump back and forth by seconds.
      const apart = Math.abs(offset - this.offset);
      if (doubt <= this.doubt || apart > doubt + this.doubt + CLOCK_TOLERANCE_MS) {
        this.offset = offset;
        this.doubt = doubt;
      }
    } else {
      if (Math.abs(offset - this.offset) > CLOCK_TOLERANCE_MS) this.offset = offset;
      this.doubt = doubt;
    }
    this.sampledLocal = middle;
    this.sampledMono = (sentMono + backMono) / 2;
    const first = !this.good;
    this.good = true;
    if (first) this.onJudged?.(this.offset, doubt);
    return true;
  }

  /**
   * Samples every `intervalMs` from now on, and every `retryMs` until a sample was good; a
   * failed sample keeps the last offset.
   */
  start(
    intervalMs = CLOCK_SYNC_MS,
    onError?: (error: Error) => void,
    retryMs = CLOCK_RETRY_MS,
  ): void {
    this.stop();
    const run = this.runs;
    const next = () => {
      this.timer = setTimeout(
        () => {
          this.sync()
            .catch((error: Error) => onError?.(error))
            .finally(() => {
              if (run === this.runs) next();
            });
        },
        this.good ? intervalMs : retryMs,
      );
      this.timer.unref();
    };
    next();
  }

  stop(): void {
    this.runs++;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
