"""The few edits tools/install_cbq_engine.sh makes to the query engine's downloaded source
before building it: run in that source's root. Each edit must match exactly once, so a
changed source fails the build loudly instead of building something else.

- gomemcached v0.3.3 (the version with the APIs the rest of this revision uses) changed three
  signatures;
- with CBQ_STANDALONE set, the engine does not wait for a cluster manager's settings nor for
  its TLS set-up;
- the file datastore names every caller an authenticated user (a cluster would check them).
The parser, planner, execution and expression packages are not touched.
"""

from __future__ import annotations

from pathlib import Path


def edit(path: str, old: str, new: str) -> None:
    file = Path(path)
    text = file.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"patch_source.py: {path}: expected one {old!r}, found {text.count(old)}")
    file.write_text(text.replace(old, new))


edit(
    "primitives/couchbase/memcached.go",
    "mc.SetSubdoc(vb, key, ops, context...)",
    "mc.SetSubdoc(vb, key, ops, false, 0, 0, context...)",
)
edit(
    "primitives/couchbase/memcached_scan.go",
    "conn.CreateRandomScan(this.vbucket(), this.scan.collId, this.sampleSize, false)",
    "conn.CreateRandomScan(this.vbucket(), this.sampleSize, false, &memcached.ClientContext{CollId: this.scan.collId})",
)
edit(
    "primitives/couchbase/memcached_scan.go",
    "conn.CreateRangeScan(this.vbucket(), this.scan.collId, start, exclStart, end, exclEnd, false)",
    "conn.CreateRangeScan(this.vbucket(), start, exclStart, end, exclEnd, false, "
    "&memcached.ClientContext{CollId: this.scan.collId})",
)
edit(
    "server/cbq-engine/main.go",
    '\twg.Add(1)\n\tlogging.Infof("Waiting for initial settings")',
    '\tif os.Getenv("CBQ_STANDALONE") != "" {\n'
    "\t\treturn queryMetakv.Config(value.NewValue(map[string]interface{}{})), 0\n\t}\n"
    '\twg.Add(1)\n\tlogging.Infof("Waiting for initial settings")',
)
edit(
    "server/cbq-engine/main.go",
    "\ter = endpoint.SetupSSL()\n\tif er != nil {",
    '\ter = endpoint.SetupSSL()\n\tif er != nil && os.Getenv("CBQ_STANDALONE") == "" {',
)
edit(
    "datastore/file/file.go",
    "func (s *store) Authorize(*auth.Privileges, *auth.Credentials) errors.Error {\n\treturn nil\n}",
    "func (s *store) Authorize(_ *auth.Privileges, creds *auth.Credentials) errors.Error {\n"
    "\tif creds != nil && len(creds.AuthenticatedUsers) == 0 {\n"
    "\t\tfor u := range creds.Users {\n\t\t\tcreds.AuthenticatedUsers = append(creds.AuthenticatedUsers, u)\n\t\t}\n"
    "\t\tif len(creds.AuthenticatedUsers) == 0 {\n"
    '\t\t\tcreds.AuthenticatedUsers = append(creds.AuthenticatedUsers, "local")\n\t\t}\n'
    "\t}\n\treturn nil\n}",
)
