import { nicknameKey } from './nickname.js';

/** The course server's rule, the default list. */
export const DEFAULT_BANNED_WORDS: readonly string[] = ['i hate professor'];

/** Case-insensitive substring matching of a fixed word list. */
export class BannedWords {
  private readonly words: readonly string[];
  /** The words' look-alike keys, for names (matchesName); made when first needed. */
  private keys: readonly string[] | undefined;

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

  /**
   * For a nickname or a room's name, shown to everyone: also in any look-alike spelling
   * (`ｂａｄｗｏｒｄ`, Cyrillic `bаdword`, `𝐛𝐚𝐝𝐰𝐨𝐫𝐝`), by the key that makes such names one name.
   * Not for chats: the course's rule is a substring of the text, and a key's folding
   * (`1` is `l`) would refuse more chats than it does.
   */
  matchesName(name: string): boolean {
    if (this.words.length === 0) return false;
    if (this.matches(name)) return true;
    this.keys ??= this.words.map((w) => nicknameKey(w)).filter((k) => k.length > 0);
    const key = nicknameKey(name);
    return this.keys.some((k) => key.includes(k));
  }
}
