// The member list in the sidebar: the selected room's members (rooms.ts keeps each room's list
// and says when to show it again), and whether it is out of date while offline.
import { asString } from '../../src/protocol/coerce.js';
import { nickColor } from './colors.js';
import { countBig, countSmall, memberList, membersPanel, staleNote } from './dom.js';
import { connection } from './state.js';
import type { RoomView } from './views.js';

/** Shows the members of `view`, the room selected. */
export function renderMembers(view: RoomView): void {
  const members = view.members;
  memberList.replaceChildren(
    ...members.map((name) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.nick = name;
      const avatar = document.createElement('span');
      avatar.className = 'avatar';
      // Its letter is white (style.css), so the colour is chosen against white.
      avatar.style.background = nickColor('#ffffff', name);
      avatar.textContent = [...name][0]?.toUpperCase() ?? '?';
      avatar.setAttribute('aria-hidden', 'true');
      // A long name is cut with an ellipsis (style.css); the tooltip shows it whole.
      const shown = document.createElement('span');
      shown.className = 'name';
      shown.textContent = name;
      button.title = name;
      button.append(avatar, shown);
      if (name === connection.nickname) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        button.append(you);
        button.setAttribute('aria-label', `${name} (you)`);
      } else {
        button.setAttribute('aria-label', `Whisper to ${name}`);
      }
      li.append(button);
      return li;
    }),
  );
  countBig.textContent = String(members.length);
  countSmall.textContent = String(members.length);
}

/**
 * The nicknames of a "10" list ([[nickname, ip, port], ...]), whatever a server sent: no list
 * is none, and each name is shown as text. Read as sent, a list of another shape threw: the
 * page then kept its old member list marked offline, and \users said nothing.
 */
export function memberNames(users: unknown): string[] {
  if (!Array.isArray(users)) return [];
  return users.map((entry: unknown) => asString(Array.isArray(entry) ? entry[0] : entry));
}

/** While offline the list shows who was there, not who is: say so, to eyes and to screen readers. */
export function setStale(stale: boolean): void {
  membersPanel.dataset.stale = String(stale);
  staleNote.hidden = !stale;
  if (stale) memberList.setAttribute('aria-describedby', 'members-stale');
  else memberList.removeAttribute('aria-describedby');
}
