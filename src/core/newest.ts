/**
 * Sets `key` as the newest entry of `map` (a Map keeps insertion order), then drops the
 * oldest while it holds more than `max`: a memory of recent things with a cap.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  for (const oldest of map.keys()) {
    if (map.size <= max) return;
    map.delete(oldest);
  }
}
