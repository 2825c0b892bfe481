// Test harness for the browser tests: the real jobstatus binary on a random
// port, the built demo page served from a different origin, Debian's
// Chromium driven by playwright-core (never a downloaded browser).
import { execFileSync, spawn } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, statSync } from "node:fs";
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

export function token(sub, { service = false, secret = SECRET } = {}) {
  const args = ["token", "--sub", sub, "--jwt-secret", secret];
  if (service) args.push("--service");
  return execFileSync(BIN, args, { encoding: "utf8" }).trim();
}

/**
 * The jobstatus server as a child process; restartable on the same port and
 * database. With `dev`, it runs as a new user would (`serve --dev`, its
 * secret kept beside the database) and `printed` holds what it printed:
 * the tokens and the sign-in links.
 */
export class JobstatusServer {
  constructor({ port, database, corsOrigins = [], tls, heartbeatSecs = 2, dev = false, pageUrl }) {
    Object.assign(this, { port, database, corsOrigins, tls, heartbeatSecs, dev, pageUrl });
    this.scheme = tls ? "https" : "http";
    this.host = tls ? "localhost" : "127.0.0.1";
    this.url = `${this.scheme}://${this.host}:${port}`;
    this.log = join(RESULTS, `server-${port}.log`);
  }

  args() {
    const args = [
      "serve",
      "--listen", `127.0.0.1:${this.port}`,
      "--database-url", `sqlite://${this.database}`,
      "--heartbeat-secs", String(this.heartbeatSecs),
      "--shutdown-grace-secs", "2",
    ];
    if (this.dev) {
      args.push("--dev", "--metrics-listen", "127.0.0.1:0");
      if (this.pageUrl) args.push("--dev-page-url", this.pageUrl);
    } else {
      args.push("--jwt-secret", SECRET);
    }
    for (const origin of this.corsOrigins) args.push("--cors-origin", origin);
    if (this.tls) args.push("--tls-cert", this.tls.cert, "--tls-key", this.tls.key);
    return args;
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build first`);
    const out = openSync(this.log, "a");
    const offset = statSync(this.log).size;
    const env = { ...process.env, RUST_LOG: "info" };
    delete env.JOBSTATUS_JWT_SECRET;
    this.child = spawn(BIN, this.args(), { stdio: ["ignore", out, out], env });
    this.exited = new Promise((done) => this.child.once("exit", done));
    const deadline = Date.now() + 20_000;
    const ready = async () => (await portOpen(this.port)) && (!this.dev || this.readPrinted(offset));
    while (!(await ready())) {
      if (this.child.exitCode !== null) throw new Error(`server exited; see ${this.log}`);
      if (Date.now() > deadline) throw new Error(`server did not start; see ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Parses what `--dev` printed since `offset`; false until it is all there. */
  readPrinted(offset) {
    const text = readFileSync(this.log, "utf8").slice(offset);
    const links = {};
    for (const [, role, link] of text.matchAll(/as the (client|worker): (\S+)/g)) links[role] = link;
    if (!links.worker) return false;
    const tokens = {};
    for (const [, name, value] of text.matchAll(/export (\w+)_TOKEN=(\S+)/g)) tokens[name.toLowerCase()] = value;
    this.printed = { links, tokens };
    return true;
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

/**
 * Serves `dir` (the built page) on 127.0.0.1:port: an origin of its own.
 * `files` replaces or adds files by path (e.g. an embedder's `/config.js`).
 */
export function servePage(dir, port, files = {}) {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path in files) {
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "text/html", "cache-control": "no-store" });
      res.end(files[path]);
      return;
    }
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
