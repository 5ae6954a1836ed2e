// Nickname colours. A fixed lightness fails WCAG AA for many hues (greens and
// cyans at 45% lightness fall to about 2.3:1 on the light page), so each hue gets
// the most vivid lightness that still clears 4.5:1 against the page in each
// colour scheme. Pure functions, no DOM: the tests run them in Node too.

type Rgb = readonly [number, number, number];

/** The message background, the same values as `--bg` in style.css (the browser test checks them). */
export const PAGE_BG = { light: '#f7f7f9', dark: '#15171c' } as const;

/** AA for normal text. */
export const MIN_CONTRAST = 4.5;
// The searches aim higher, so 8-bit rounding cannot dip below AA; on a dark
// page the shades just over 4.5:1 look murky, so they go a step lighter.
const TARGET_ON_LIGHT = 4.6;
const TARGET_ON_DARK = 5.5;
const SATURATION = 0.7;

/** A stable hue per nickname, the same in any letter case. */
export function hue(nickname: string): number {
  let h = 0x811c9dc5;
  for (const ch of nickname.toLowerCase()) h = Math.imul(h ^ ch.codePointAt(0)!, 0x01000193) >>> 0;
  return h % 360;
}

export function parseHex(hex: string): Rgb {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export function toHex([r, g, b]: Rgb): string {
  return `#${((1 << 24) | (r << 16) | (g << 8) | b).toString(16).slice(1)}`;
}

/** WCAG 2 relative luminance of an 8-bit sRGB colour. */
export function luminance(rgb: Rgb): number {
  const [r, g, b] = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function contrast(a: Rgb, b: Rgb): number {
  const la = luminance(a);
  const lb = luminance(b);
  return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
}

function hsl(h: number, s: number, l: number): Rgb {
  const k = (n: number) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) =>
    Math.round(255 * (l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1))));
  return [f(0), f(8), f(4)];
}

/**
 * The colour of hue `h` closest in lightness to `bg` that still contrasts with
 * it: on a light background the lightest passing shade, on a dark one the
 * darkest. Luminance grows with HSL lightness, so a walk from the far end
 * stops at the first shade that fails and returns the one before.
 */
export function readableOn(bg: string, h: number): string {
  const back = parseHex(bg);
  const dark = luminance(back) < 0.18;
  const target = dark ? TARGET_ON_DARK : TARGET_ON_LIGHT;
  let best: Rgb = dark ? [255, 255, 255] : [0, 0, 0];
  for (let step = 0; step <= 100; step++) {
    const l = dark ? 1 - step / 100 : step / 100;
    const rgb = hsl(h, SATURATION, l);
    if (contrast(rgb, back) < target) break;
    best = rgb;
  }
  return toHex(best);
}

const cache = new Map<string, string>();

/** Memoised `readableOn`: 360 hues per background at most. */
export function nickColor(bg: string, nickname: string): string {
  const h = hue(nickname);
  const key = `${bg}/${h}`;
  let color = cache.get(key);
  if (color === undefined) {
    color = readableOn(bg, h);
    cache.set(key, color);
  }
  return color;
}
