import { defineConfig } from "vite";

// The demo page. `npm run dev` serves it on :5173 (allowed by `--dev`);
// `npm run build` writes a static copy to dist/ (used by the browser tests).
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, target: "es2022" },
  server: { port: 5173 },
});
