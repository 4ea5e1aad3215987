// Package tlsenv is the test kit for HTTPS on real servers: Let's Encrypt's
// test CA (Pebble) and its DNS server (pebble-challtestsrv) joined to a
// throwaway VPS of real sshd and nginx (internal/vpsenv), so a certificate is
// issued over HTTP-01 answered by the site's own nginx, deployed by the SSH
// driver and fetched over HTTPS verified against Pebble's root.
//
//	env := tlsenv.Start(t, tlsenv.Options{})
//	prov := env.Provisioner(t)                      // drivers/ssh against the VPS
//	site := env.Site("site_a", "a.test", "www.a.test")
//	iss, _ := acme.New(env.IssuerConfig(accounts))  // Pebble's directory, fast polling
//	cert, err := iss.Issue(ctx, acme.Request{..., HTTP01: jobs.SitePresenter(prov, site)})
//	before := env.VPS.NginxWorkers(t)
//	err = prov.DeployCertificate(ctx, site, drivers.TLSCertificate{ChainPEM: cert.ChainPEM, KeyPEM: cert.KeyPEM}, opts)
//	env.VPS.WaitNginxReload(t, before)              // the old workers are gone
//	f, err := tlsenv.Fetch(ctx, env.HTTPSClient(), "https://a.test/") // f.Serial == cert.Serial, f.Proto HTTP/2.0
//	p := env.StartPoller(t, "https://a.test/", tlsenv.PollOptions{KeepAlive: true})
//	… issue and deploy a renewal …
//	report := p.Stop()                              // requests, errors, serials seen in order
//
// Every name resolves to 127.0.0.1 through challtestsrv (Pebble asks it;
// the harness's clients dial 127.0.0.1 whatever the URL's host), and Pebble's
// VA fetches HTTP-01 answers from the VPS's nginx HTTP port. It is imported
// only from _test.go files. Without the servers (Debian's openssh-server,
// nginx, php-fpm, mariadb-server; the Pebble Go tools) or root, Start skips on
// a developer machine and fails when CI is set, as vpsenv and testenv do.
package tlsenv
