/**
 * The course client's command syntax, shared by the terminal and web clients:
 * a line starting with "\\" is a command, anything else is chat.
 */
export const HELP = `Commands:
  \\users                  who is in the room
  \\wh <nickname> <text>   whisper to one user
  \\rename <nickname>      change your nickname
  \\rtt                    round-trip time to the server
  \\version                server and client versions
  \\join <room>            join a room (made if it does not exist)
  \\leave <room>           leave a room (also \\part; the lobby is left with \\exit)
  \\rooms                  every room, with its count and whether you are in it
  \\room <room>            type into that room from now on (\\room lobby to go back)
  \\help                   this list
  \\exit                   leave (Ctrl+C or Ctrl+D also work)
Anything else is sent to the room you are typing into.`;

export type Command =
  | { kind: 'chat'; text: string }
  | { kind: 'users' }
  | { kind: 'whisper'; to: string; text: string }
  | { kind: 'rename'; nickname: string }
  | { kind: 'rtt' }
  | { kind: 'version' }
  | { kind: 'help' }
  | { kind: 'join'; room: string }
  /** No room: the one being typed into. */
  | { kind: 'part'; room: string | undefined }
  | { kind: 'rooms' }
  | { kind: 'room'; room: string }
  | { kind: 'exit' }
  | { kind: 'empty' }
  | { kind: 'invalid'; message: string };

/** Parses one line of input; anything not starting with "\" is chat. */
export function parseCommand(line: string): Command {
  if (line.trim() === '') return { kind: 'empty' };
  if (!line.startsWith('\\')) return { kind: 'chat', text: line };
  const [word = '', ...rest] = line.slice(1).split(' ');
  const args = rest.join(' ');
  switch (word.toLowerCase()) {
    case 'users':
      return { kind: 'users' };
    case 'wh':
    case 'whisper': {
      const space = args.indexOf(' ');
      const to = space < 0 ? args : args.slice(0, space);
      const text = space < 0 ? '' : args.slice(space + 1);
      if (to === '' || text.trim() === '')
        return { kind: 'invalid', message: 'Usage: \\wh <nickname> <message>' };
      return { kind: 'whisper', to, text };
    }
    case 'rename': {
      const nickname = args.trim();
      if (nickname === '' || /\s/.test(nickname))
        return { kind: 'invalid', message: 'Usage: \\rename <nickname>' };
      return { kind: 'rename', nickname };
    }
    case 'rtt':
      return { kind: 'rtt' };
    case 'version':
      return { kind: 'version' };
    case 'join': {
      const room = args.trim();
      if (room === '' || /\s/.test(room))
        return { kind: 'invalid', message: 'Usage: \\join <room>' };
      return { kind: 'join', room };
    }
    case 'leave':
    case 'part': {
      const room = args.trim();
      if (/\s/.test(room)) return { kind: 'invalid', message: 'Usage: \\leave <room>' };
      return { kind: 'part', room: room === '' ? undefined : room };
    }
    case 'rooms':
      return { kind: 'rooms' };
    case 'room': {
      const room = args.trim();
      if (room === '' || /\s/.test(room))
        return { kind: 'invalid', message: 'Usage: \\room <room>' };
      return { kind: 'room', room };
    }
    case 'help':
    case '?':
      return { kind: 'help' };
    case 'exit':
    case 'quit':
      return { kind: 'exit' };
    default:
      return { kind: 'invalid', message: `Unknown command \\${word}. Type \\help for the list.` };
  }
}
