// The page's elements (web/index.html), looked up once, and the note the composer gains.

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
export const input = $<HTMLInputElement>('input');
export const composer = $<HTMLFormElement>('composer');
export const sendButton = composer.querySelector('button') as HTMLButtonElement;
export const joinBackdrop = $<HTMLDivElement>('join');
export const joinForm = $<HTMLFormElement>('join-form');
export const nicknameInput = $<HTMLInputElement>('nickname');
export const joinError = $<HTMLParagraphElement>('join-error');
export const statusBox = $<HTMLSpanElement>('status');
export const statusText = $<HTMLSpanElement>('status-text');
export const statusDetail = $<HTMLSpanElement>('status-detail');
export const rttBox = $<HTMLSpanElement>('rtt');
export const versionBox = $<HTMLSpanElement>('version');
export const memberList = $<HTMLUListElement>('member-list');
export const membersPanel = $<HTMLElement>('members');
export const membersToggle = $<HTMLButtonElement>('members-toggle');
export const countBig = $<HTMLSpanElement>('members-count');
export const countSmall = $<HTMLSpanElement>('members-count-small');
export const retryButton = $<HTMLButtonElement>('retry');
export const staleNote = $<HTMLParagraphElement>('members-stale');
export const roomTitle = $<HTMLSpanElement>('room-title');
export const roomList = $<HTMLUListElement>('room-list');
export const roomForm = $<HTMLFormElement>('room-form');
export const roomName = $<HTMLInputElement>('room-name');
export const moreRooms = $<HTMLUListElement>('more-rooms');
export const moreRoomsTitle = $<HTMLHeadingElement>('more-rooms-title');
export const lobbyList = $<HTMLOListElement>('messages');

// Lines typed or pasted faster than the server allows wait their turn; this
// says how many, beside the Send button, so a slow trickle does not look lost.
export const queueNote = document.createElement('span');
queueNote.id = 'queue';
queueNote.className = 'queue-note';
queueNote.setAttribute('role', 'status');
queueNote.hidden = true;
composer.insertBefore(queueNote, sendButton);
