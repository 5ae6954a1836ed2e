import { OPERATOR_HELP, SLASH_HELP } from '../../src/protocol/slash-commands.js';

/**
 * `\help` in the web app. The terminal client's list (src/protocol/slash-commands.ts) speaks of
 * Ctrl+C, prompts and a terminal; a browser leaves, switches rooms and scrolls otherwise.
 */
export const WEB_HELP = `Commands:
  \\users [room]           who is in a room (default: the one typed into)
  \\wh <nickname> <text>   whisper to one user (or click a member)
  \\me <text>              say what you do, shown as "* ann waves" (also /me)
  \\rename <nickname>      change your nickname
  \\rtt                    round-trip time to the server
  \\version                server and client versions
  \\join <room>            join a room, made if it does not exist (or use the Rooms form)
  \\leave [room]           leave a room (also \\part, or its × in the room list)
  \\rooms                  every room, with its count and whether you are in it
  \\room <room>            type into that room (or click it in the room list)
  \\history [n]            the n (default 20, at most 100) messages before the oldest shown
  \\help                   this list
  \\exit                   leave the chat; the page then asks for a nickname again
${OPERATOR_HELP}
${SLASH_HELP}
Keys:
  PageUp / PageDown        scroll the messages from where you type
  Ctrl+Home / Ctrl+End     go to the oldest loaded / the newest message
  Shift+Tab                move to the messages; arrows, PageUp and Home scroll there
  Scrolling to the top loads older messages.
Anything else is sent to the room you are typing into.`;
