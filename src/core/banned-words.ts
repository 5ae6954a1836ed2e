/** The course server's rule, the default list. */
export const DEFAULT_BANNED_WORDS: readonly string[] = ['i hate professor'];

/** Case-insensitive substring matching of a fixed word list. */
export class BannedWords {
  private readonly words: readonly string[];

  constructor(words: readonly string[]) {
    // An empty entry would match every message.
    this.words = words.map((w) => w.toLowerCase()).filter((w) => w.length > 0);
  }

  /** Parses a file's text: one word or phrase per line; blank lines are skipped. */
  static fromText(text: string): BannedWords {
    return new BannedWords(text.split(/\r?\n/).map((line) => line.trim()));
  }

  get size(): number {
    return this.words.length;
  }

  matches(message: string): boolean {
    if (this.words.length === 0) return false;
    const lower = message.toLowerCase();
    for (const word of this.words) {
      if (lower.includes(word)) return true;
    }
    return false;
  }
}
