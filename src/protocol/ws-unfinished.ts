/**
 * Follows a WebSocket client's frames (RFC 6455, section 5.2) through the raw bytes it sends,
 * only to tell how many of them belong to a data message whose end has not arrived: its
 * fragments so far and the frame under way, headers included. The WebSocket library
 * assembles messages and says nothing of one until it is whole, so a server that caps what
 * all clients hold of unfinished requests together counts these itself.
 *
 * Control frames (ping, pong, close: at most 125 bytes) may come between the fragments of a
 * message and count for nothing; bytes of a header not yet whole (at most 14) neither.
 * Whatever is malformed the library answers by closing the connection, so this only has to
 * stay bounded on it, not be right.
 */
export class WsUnfinished {
  /** Bytes of the data message under way; 0 between messages. */
  bytes = 0;
  private readonly head = new Uint8Array(14);
  private headRead = 0;
  private payloadLeft = 0;
  /** The frame under way is part of a data message (text, binary or continuation). */
  private data = false;
  /** ... and its last frame. */
  private last = false;

  /** Takes the next bytes the client sent; returns the bytes now unfinished. */
  feed(chunk: Uint8Array): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.payloadLeft > 0) {
        const taken = Math.min(this.payloadLeft, chunk.length - at);
        this.payloadLeft -= taken;
        at += taken;
        if (this.data) this.bytes += taken;
        if (this.payloadLeft === 0) this.frameEnded();
        continue;
      }
      this.head[this.headRead++] = chunk[at++]!;
      if (this.headRead >= 2 && this.headRead === this.headSize()) this.frameBegan();
    }
    return this.bytes;
  }

  /** The header's size, once its first two bytes are in. */
  private headSize(): number {
    const second = this.head[1]!;
    const short = second & 0x7f;
    const extended = short === 126 ? 2 : short === 127 ? 8 : 0;
    return 2 + extended + (second & 0x80 ? 4 : 0);
  }

  private frameBegan(): void {
    const head = this.head;
    const size = this.headRead;
    this.headRead = 0;
    const short = head[1]! & 0x7f;
    let length = short;
    if (short === 126) length = (head[2]! << 8) | head[3]!;
    else if (short === 127) {
      // Beyond 2^53 the library has closed the connection long before this matters.
      length = Math.min(
        (head[2]! * 2 ** 24 + (head[3]! << 16) + (head[4]! << 8) + head[5]!) * 2 ** 32 +
          (head[6]! * 2 ** 24 + (head[7]! << 16) + (head[8]! << 8) + head[9]!),
        Number.MAX_SAFE_INTEGER,
      );
    }
    this.data = (head[0]! & 0x08) === 0;
    this.last = (head[0]! & 0x80) !== 0;
    if (this.data) this.bytes += size;
    this.payloadLeft = length;
    if (length === 0) this.frameEnded();
  }

  private frameEnded(): void {
    if (this.data && this.last) this.bytes = 0;
  }
}
