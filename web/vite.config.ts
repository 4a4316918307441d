// Builds the shell (web/src) and every plugin's pages (plugins/*/ui, outside this folder)
// into sygmax/web/static, which the api profile serves (sygmax/web) and wheels carry.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  plugins: [preact()],
  resolve: {
    // Plugin pages live outside web/ and have no node_modules of their own: resolve their
    // bare imports from web/ so shell and pages share one copy of Preact and of the library.
    alias: { "@sygmax/web": here("./src/lib/index.ts") },
    dedupe: ["preact"],
  },
  server: { fs: { allow: [here("..")] } },
  build: {
    outDir: here("../sygmax/web/static"),
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    // Never inline assets as data: URLs; the CSP allows images from 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    rollupOptions: {
      output: {
        // plugins/<name>/ui/index.tsx becomes assets/plugin-<name>-<hash>.js: easy to spot in a build.
        chunkFileNames: (chunk) => {
          const plugin = /plugins\/([^/]+)\/ui\/index\.tsx$/.exec(chunk.facadeModuleId ?? "")?.[1];
          return plugin ? `assets/plugin-${plugin}-[hash].js` : "assets/[name]-[hash].js";
        },
      },
    },
  },
});
