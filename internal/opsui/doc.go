// Package opsui holds the tests of the ops UI (asynqmon at /ops/queues) as an
// operator uses it: the real `chom ingress` binary on real PostgreSQL and Redis,
// driven over HTTP for the access rules (401 without a credential, 403 for a
// token with neither the ops nor the admin scope, read-only for ops, everything
// for admin) and in headless Chromium (browser/opsui.mjs, playwright-core) for
// what the page shows. It has no code outside its tests.
package opsui
