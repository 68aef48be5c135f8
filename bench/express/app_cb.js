// The blog's Node.js/Express version of the user-profile API, over Couchbase.
//
// app.js with the store the blog used: the official `couchbase` package,
// connected once at start-up, one awaited key-value get per request, the
// document decoded by the SDK and sent with res.json. In its strongest form:
// the SDK's threshold-logging tracer and logging meter are off. The nickname
// and username lookups run our statement (cbquery.py, the first page of 100),
// prepared, then get the page's documents concurrently (bench/lookups.py
// drives them on Couchbase's SQL++ engine behind CAVES).
//   COUCHBASE_HOST=couchbase://127.0.0.1 PORT=8083 node app_cb.js
'use strict';

const couchbase = require('couchbase');
const express = require('express');
const { answer, errorHandler, failure, methodNotAllowed, tokenChecker } = require('./api');

async function main() {
  const env = process.env;
  const cluster = await couchbase.connect(env.COUCHBASE_HOST || 'couchbase://127.0.0.1', {
    username: env.COUCHBASE_USER || 'Administrator',
    password: env.COUCHBASE_PASSWORD || 'password',
    tracingConfig: { enableTracing: false },
    metricsConfig: { enableMetrics: false },
  });
  const scope = cluster.bucket(env.COUCHBASE_BUCKET || 'sample_app').scope(env.COUCHBASE_SCOPE || 'profiles');
  const collections = {};
  for (const name of ['user_data', 'user_images', 'service_auth']) collections[name] = scope.collection(name);

  async function get(collection, id) {
    try {
      return (await collections[collection].get(`${collection}:${id}`)).content;
    } catch (err) {
      if (err instanceof couchbase.DocumentNotFoundError) return null;
      throw err;
    }
  }

  const checkToken = tokenChecker(((await get('service_auth', 1)) || {}).token);

  const PAGE = 100;
  const statement = (field, param) => // cbquery.py's, for the default collection names
    `SELECT RAW [META().id, record_id] FROM \`user_data\` WHERE ${field} = $${param}` +
    ' AND record_id > $after ORDER BY record_id LIMIT $limit';
  const statements = { nickname: statement('nickname', 'nickname'), username: statement('user_id', 'username') };

  async function find(param, value) {
    const result = await scope.query(statements[param], {
      parameters: { [param]: value, after: -(2 ** 53), limit: PAGE + 1 },
      adhoc: false,
    });
    const keys = result.rows.slice(0, PAGE).map((row) => row[0]);
    return (await Promise.all(keys.map((key) => collections.user_data.get(key)))).map((got) => got.content);
  }

  const app = express();
  const api = express.Router();

  app.get('/healthz', (req, res) => res.json({ status: 'success' }));
  app.use('/api/v1', checkToken, api);

  api.route('/id/:id').get(async (req, res) => {
    const doc = await get('user_data', req.params.id);
    answer(res, doc ? [doc] : []);
  }).all(methodNotAllowed);

  api.route('/nickname/:nickname').get(async (req, res) => {
    answer(res, await find('nickname', req.params.nickname));
  }).all(methodNotAllowed);

  api.route('/username/:username').get(async (req, res) => {
    answer(res, await find('username', req.params.username));
  }).all(methodNotAllowed);

  api.route('/picture/record/:id').get(async (req, res) => {
    const doc = await get('user_images', req.params.id);
    answer(res, doc ? [doc] : []);
  }).all(methodNotAllowed);

  api.route('/picture/raw/:id').get(async (req, res) => {
    const doc = await get('user_images', req.params.id);
    if (!doc) return failure(res, 404, 'Not Found');
    res.type(`image/${doc.type}`).send(Buffer.from(doc.image, 'base64'));
  }).all(methodNotAllowed);

  app.use((req, res) => failure(res, 404, 'Not Found'));

  app.use(errorHandler((err) => err instanceof couchbase.CouchbaseError));

  const port = Number(env.PORT || 8083);
  app.listen(port, env.HOST || '127.0.0.1', () => console.log(`express (couchbase) listening on ${port}`));
}

main().catch((err) => {
  console.error(`express (couchbase): ${err.message}`);
  process.exit(1);
});
