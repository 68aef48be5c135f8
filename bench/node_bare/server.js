// The ceiling on the Node.js Couchbase SDK: no framework, only node:http.
//
// GET /api/v1/id/<id> with the bearer token answers `[<the stored document>]`:
// the document's bytes as the SDK hands them over (RawJsonTranscoder), never
// parsed nor re-serialised, in one write. The SDK's tracer and meter are off.
// What any server on this SDK spends per request beyond this is its framework
// and its JSON handling. Only the route the benchmark drives, and /healthz.
//   COUCHBASE_HOST=couchbase://127.0.0.1 PORT=8084 node server.js
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const couchbase = require('couchbase');

const OPEN = Buffer.from('[');
const CLOSE = Buffer.from(']');
const ROUTE = /^\/api\/v1\/id\/([^/?#]+)$/;

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length, ...headers });
  res.end(body);
}

function failure(res, status, error, headers) {
  send(res, status, Buffer.from(JSON.stringify({ status: 'failure', message: { error } })), headers);
}

async function main() {
  const env = process.env;
  const cluster = await couchbase.connect(env.COUCHBASE_HOST || 'couchbase://127.0.0.1', {
    username: env.COUCHBASE_USER || 'Administrator',
    password: env.COUCHBASE_PASSWORD || 'password',
    tracingConfig: { enableTracing: false },
    metricsConfig: { enableMetrics: false },
  });
  const scope = cluster.bucket(env.COUCHBASE_BUCKET || 'sample_app').scope(env.COUCHBASE_SCOPE || 'profiles');
  const profiles = scope.collection('user_data');
  const raw = { transcoder: new couchbase.RawJsonTranscoder() };
  const token = Buffer.from((await scope.collection('service_auth').get('service_auth:1')).content.token || '');
  const healthy = Buffer.from('{"status":"success"}');

  function authorized(req) {
    const header = req.headers.authorization || '';
    const given = Buffer.from(header.slice(0, 7).toLowerCase() === 'bearer ' ? header.slice(7).trim() : '');
    return token.length > 0 && given.length === token.length && crypto.timingSafeEqual(given, token);
  }

  async function handle(req, res) {
    if (req.url === '/healthz') return send(res, 200, healthy);
    const route = ROUTE.exec(req.url);
    if (!route) return failure(res, 404, 'Not Found');
    if (!authorized(req)) return failure(res, 401, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
    let doc;
    try {
      doc = (await profiles.get(`user_data:${decodeURIComponent(route[1])}`, raw)).content;
    } catch (err) {
      if (err instanceof URIError) return failure(res, 400, 'Bad Request');
      if (err instanceof couchbase.DocumentNotFoundError) return failure(res, 404, 'Not Found');
      return failure(res, 503, 'Service Unavailable');
    }
    send(res, 200, Buffer.concat([OPEN, doc, CLOSE]));
  }

  const port = Number(env.PORT || 8084);
  http.createServer(handle).listen(port, env.HOST || '127.0.0.1', () => console.log(`node http listening on ${port}`));
}

main().catch((err) => {
  console.error(`node http (couchbase): ${err.message}`);
  process.exit(1);
});
