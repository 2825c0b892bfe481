# ---- Browser client and browser tests (web/) --------------------------------
# Paste into .ci/run after the Rust tests (which leave target/debug/jobstatus
# built). Needs: Debian's chromium (+ chromium-driver) and openssl, Node 20
# with npm; never downloads a browser. Takes about a minute when warm.
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver openssl >/dev/null
fi

cargo build --bin jobstatus          # the e2e tests start target/debug/jobstatus

(
  cd web
  npm ci --no-audit --no-fund
  # Generated code must match proto/ (generation is `npm run generate`).
  npx buf generate ../proto --template buf.gen.yaml
  git diff --exit-code -- src/gen
  npm run typecheck
  npm test                           # vitest: reconnecting client vs a fake transport
  # Builds the demo page, then: the client against the real server (Node),
  # and the seed's two-browser test in Chromium over HTTP/1.1 and TLS, the
  # page served from another origin than the API. Screenshots and server
  # logs land in web/test-results/.
  JOBSTATUS_BIN="$PWD/../target/debug/jobstatus" CHROMIUM_PATH=/usr/bin/chromium npm run e2e
)
