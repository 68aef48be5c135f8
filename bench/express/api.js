// What both Express apps share: the token check, the answers and the error handler.
'use strict';

const crypto = require('node:crypto');

function failure(res, status, error) {
  res.status(status).json({ status: 'failure', message: { error } });
}

function tokenChecker(token) {
  const expected = Buffer.from(token || '');
  return (req, res, next) => {
    const header = req.get('authorization') || '';
    const given = Buffer.from(
      header.slice(0, 7).toLowerCase() === 'bearer ' ? header.slice(7).trim() : req.get('x-access-token') || '');
    if (expected.length > 0 && given.length === expected.length && crypto.timingSafeEqual(given, expected)) {
      return next();
    }
    res.set('WWW-Authenticate', 'Bearer');
    failure(res, 401, 'Unauthorized');
  };
}

function answer(res, docs) {
  if (docs.length === 0) return failure(res, 404, 'Not Found');
  res.json(docs);
}

function methodNotAllowed(req, res) {
  res.set('Allow', 'GET, HEAD');
  failure(res, 405, 'Method Not Allowed');
}

// A malformed request (bad percent-encoding) is the client's; a store fault is a 503.
function errorHandler(isStoreError) {
  return (err, req, res, next) => {
    if (isStoreError(err)) return failure(res, 503, 'Service Unavailable');
    const status = err.status || err.statusCode || 500;
    failure(res, status, status < 500 ? 'Bad Request' : 'Internal Server Error');
  };
}

module.exports = { failure, tokenChecker, answer, methodNotAllowed, errorHandler };
