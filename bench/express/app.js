// The blog's Node.js/Express version of the user-profile API, over the embedded SQLite store.
//
// Written as an Express user would: app.get per route, a middleware that
// checks the bearer token read once at start-up, res.json for the answers.
//   USERPROFILE_DB=../../data/bench.db PORT=8082 node app.js
'use strict';

const Database = require('better-sqlite3');
const express = require('express');
const { answer, errorHandler, failure, methodNotAllowed, tokenChecker } = require('./api');

const db = new Database(process.env.USERPROFILE_DB || 'data/userprofile.db', { fileMustExist: true });
const getDoc = {
  user_data: db.prepare('SELECT doc FROM user_data WHERE key = ?').pluck(),
  user_images: db.prepare('SELECT doc FROM user_images WHERE key = ?').pluck(),
  service_auth: db.prepare('SELECT doc FROM service_auth WHERE key = ?').pluck(),
};
const byNickname = db.prepare('SELECT doc FROM user_data WHERE nickname = ? ORDER BY record_id').pluck();
const byUsername = db.prepare('SELECT doc FROM user_data WHERE user_id = ?').pluck();

function get(collection, id) {
  const doc = getDoc[collection].get(`${collection}:${id}`);
  return doc === undefined ? null : JSON.parse(doc);
}

const checkToken = tokenChecker((get('service_auth', 1) || {}).token);

const app = express();
const api = express.Router();

app.get('/healthz', (req, res) => res.json({ status: 'success' }));
app.use('/api/v1', checkToken, api);

api.route('/id/:id').get((req, res) => {
  const doc = get('user_data', req.params.id);
  answer(res, doc ? [doc] : []);
}).all(methodNotAllowed);

api.route('/nickname/:nickname').get((req, res) => {
  answer(res, byNickname.all(req.params.nickname).map((doc) => JSON.parse(doc)));
}).all(methodNotAllowed);

api.route('/username/:username').get((req, res) => {
  answer(res, byUsername.all(req.params.username).map((doc) => JSON.parse(doc)));
}).all(methodNotAllowed);

api.route('/picture/record/:id').get((req, res) => {
  const doc = get('user_images', req.params.id);
  answer(res, doc ? [doc] : []);
}).all(methodNotAllowed);

api.route('/picture/raw/:id').get((req, res) => {
  const doc = get('user_images', req.params.id);
  if (!doc) return failure(res, 404, 'Not Found');
  res.type(`image/${doc.type}`).send(Buffer.from(doc.image, 'base64'));
}).all(methodNotAllowed);

app.use((req, res) => failure(res, 404, 'Not Found'));

app.use(errorHandler((err) => err instanceof Database.SqliteError));

const port = Number(process.env.PORT || 8082);
app.listen(port, process.env.HOST || '127.0.0.1', () => console.log(`express listening on ${port}`));
