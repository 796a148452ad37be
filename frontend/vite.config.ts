// Vite build of the dashboard. `build.rs` sets MOZI_DASHBOARD_OUT to
// `$OUT_DIR/dashboard`; run by hand the bundle goes to `dist/`.
// A gzip twin (`*.gz`) is written beside every compressible file so the daemon
// can send precompressed bytes (src/dashboard.rs).
import { defineConfig, type Plugin } from 'vite';
import { gzipSync } from 'node:zlib';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const outDir = process.env.MOZI_DASHBOARD_OUT || 'dist';

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function gzipTwins(): Plugin {
  return {
    name: 'moziplus-gzip-twins',
    apply: 'build',
    closeBundle() {
      for (const file of walk(outDir)) {
        if (/\.(js|css|html|svg|json)$/.test(file)) {
          writeFileSync(`${file}.gz`, gzipSync(readFileSync(file), { level: 9 }));
        }
      }
    },
  };
}

export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2020',
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  plugins: [gzipTwins()],
  server: {
    proxy: { '/api': 'http://127.0.0.1:8083', '/health': 'http://127.0.0.1:8083' },
  },
});
