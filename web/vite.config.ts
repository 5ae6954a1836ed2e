import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The web app is served by confab itself from dist/web; it loads nothing from
// any other host.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
  },
  server: {
    proxy: { '/ws': { target: 'ws://127.0.0.1:20880', ws: true } },
  },
});
