// Rewrites the configuration table in README.md from the options table in
// src/config.ts (run after `npm run build`).
import { readFileSync, writeFileSync } from 'node:fs';
import { optionsMarkdown } from '../dist/config.js';

const path = new URL('../README.md', import.meta.url);
const lines = readFileSync(path, 'utf8').split('\n');
const start = lines.findIndex((l) => l.startsWith('| flag |'));
if (start < 0) throw new Error('README.md has no configuration table');
let end = start;
while (end < lines.length && lines[end].startsWith('|')) end++;
lines.splice(start, end - start, optionsMarkdown());
writeFileSync(path, lines.join('\n'));
