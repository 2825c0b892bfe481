// Test harness for the browser tests: the real jobstatus binary on a random
// port, the built demo page served from a different origin, Debian's
// Chromium driven by playwright-core (never a downloaded browser).
import { execFileSync, spawn } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { connect, createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { JobAdminService, JobService } from "../src/gen/jobstatus/v1/jobstatus_pb.ts";

export const WEB = resolve(fileURLToPath(import.meta.url), "../..");
export const RESULTS = join(WEB, "test-results");
export const BIN = process.env.JOBSTATUS_BIN ?? resolve(WEB, "../target/debug/jobstatus");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SECRET = "browser-test-secret-0123456789abcdef-0123";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createTcpServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function portOpen(port) {
  return new Promise((done) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}

export function token(sub, { service = false } = {}) {
  const args = ["token", "--sub", sub, "--jwt-secret", SECRET];
  if (service) args.push("--service");
  return execFileSync(BIN, args, { encoding: "utf8" }).trim();
}

/** The jobstatus server as a child process; restartable on the same port and database. */
export class JobstatusServer {
  constructor({ port, database, corsOrigins, tls, heartbeatSecs = 2 }) {
    Object.assign(this, { port, database, corsOrigins, tls, heartbeatSecs });
    this.scheme = tls ? "https" : "http";
    this.host = tls ? "localhost" : "127.0.0.1";
    this.url = `${this.scheme}://${this.host}:${port}`;
    this.log = join(RESULTS, `server-${port}.log`);
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build first`);
    const args = [
      "serve",
      "--listen", `127.0.0.1:${this.port}`,
      "--database-url", `sqlite://${this.database}`,
      "--jwt-secret", SECRET,
      "--heartbeat-secs", String(this.heartbeatSecs),
      "--shutdown-grace-secs", "2",
    ];
    for (const origin of this.corsOrigins) args.push("--cors-origin", origin);
    if (this.tls) args.push("--tls-cert", this.tls.cert, "--tls-key", this.tls.key);
    const out = openSync(this.log, "a");
    this.child = spawn(BIN, args, { stdio: ["ignore", out, out], env: { ...process.env, RUST_LOG: "info" } });
    this.exited = new Promise((done) => this.child.once("exit", done));
    const deadline = Date.now() + 20_000;
    while (!(await portOpen(this.port))) {
      if (this.child.exitCode !== null) throw new Error(`server exited; see ${this.log}`);
      if (Date.now() > deadline) throw new Error(`server did not listen; see ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await this.exited;
  }
}

/** Clients for test set-up, from Node (plain HTTP only). */
export function apiClients(baseUrl) {
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
  return {
    admin: createClient(JobAdminService, transport),
    jobs: createClient(JobService, transport),
  };
}

export const bearer = (t) => ({ headers: { authorization: `Bearer ${t}` } });

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

/** Serves `dir` (the built page) on 127.0.0.1:port: an origin of its own. */
export function servePage(dir, port) {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    let file = join(dir, path === "/" ? "index.html" : path);
    if (!file.startsWith(dir) || !existsSync(file) || !statSync(file).isFile()) {
      file = join(dir, "index.html");
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  return new Promise((done) => server.listen(port, "127.0.0.1", () => done(server)));
}

/** A self-signed certificate for localhost, made with openssl. */
export function selfSignedCert(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-nodes", "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  return { cert, key };
}

export function ensureResults() {
  mkdirSync(RESULTS, { recursive: true });
}
