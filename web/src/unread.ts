// Unread counts: on a room's badge while another is selected, in the tab's title while it is
// hidden.
import { renderBadge, selected } from './rooms.js';
import type { RoomView } from './views.js';

const baseTitle = document.title;
let hiddenUnread = 0;

/**
 * A new message in a room: counted on the room if another is selected, in the title if the
 * tab is hidden. `mention`: it names the reader.
 */
export function countUnread(view: RoomView, mention = false): void {
  if (view !== selected) {
    view.unread++;
    if (mention) view.mentioned = true;
    renderBadge(view);
  }
  if (document.visibilityState !== 'hidden') return;
  hiddenUnread++;
  document.title = `(${hiddenUnread}) ${baseTitle}`;
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  hiddenUnread = 0;
  document.title = baseTitle;
});
