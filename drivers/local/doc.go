// Package local is the drivers.Provisioner that does the real work on this machine:
// each VPS is a directory under a root (the data directory of `chom dev`, or a
// t.TempDir in tests) holding the same files the ssh driver renders on a real server.
//
// Layout under <Root>/<server-id>/:
//
//	sites/<domain>/public/index.html|index.php   document root and starter page
//	sites/<domain>/logs/                         nginx access.log, error.log; php-error.log
//	sites/<domain>/tmp/                          PHP upload and temp dir
//	nginx/sites-enabled/<domain>.conf            the site's server block
//	nginx/reload-requested                       touched after every reload check
//	php/<version>/fpm/pool.d/<domain>.conf       php-fpm pool (not for html)
//	run/php-<system-user>.sock                   the pool's socket (created by php-fpm)
//	acme/<domain>/<token>                        ACME HTTP-01 key authorizations (PutChallenge)
//	tls/<domain>/fullchain.pem, privkey.pem      the deployed certificate (0700, files 0600)
//	tls/<domain>/tls.env                         its HSTS/OCSP choices, so Provision keeps TLS
//
// Files are written atomically and only when their content changes, so Provision
// converges: running it again, or after a crash half-way, leaves the same files. The
// starter index page is the one exception to "rewrite what differs": it is written
// only if no index page exists, because the tenant may have uploaded their own.
//
// Nothing here runs a shell command. Every value rendered into a file has passed
// drivers.ValidateSiteSpec and is checked again against its own pattern just before
// rendering, and every path is checked to stay inside <Root>/<server-id>.
//
// The Provisioner is also the drivers.UsageProbe of these servers: DiskBytes walks a
// site's document root, Bandwidth streams its logs/access.log and rotated copies.
//
// And it is the drivers.BackupSource of these servers (backup.go): Archive
// streams the document root as tar+gzip, Restore stages an archive beside the
// root and swaps it in only after the whole stream was read without error.
// There is no database server here: see Archive for what the database kinds do.
package local
