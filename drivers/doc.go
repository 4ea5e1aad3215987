// Package drivers defines what the workers need from the things that touch a VPS:
// the Provisioner interface that puts a site on a server and takes it off, the
// SiteSpec it works from, and the validation every driver runs before a single value
// from a spec reaches a file, a template or a remote command.
//
// Ingress already validates requests, but a spec reaches a driver through a queue
// payload that may be old, replayed or hand-edited, so ValidateSiteSpec checks it
// again, strictly, here. Drivers must call it first and render only validated values.
//
// TLSDeployer serves a site over HTTPS: ACME HTTP-01 tokens, a certificate
// checked by ParseTLSCertificate before any driver writes it, and the nginx TLS
// block.
//
// UsageProbe measures a site's disk and bandwidth for metering; ScanAccessLog is the
// streaming nginx combined-format parser every implementation shares.
//
// The package depends on the standard library only; implementations live in one
// sub-package per dependency (local for a directory on this machine, ssh for a real
// server), and only cmd/chom knows the concrete types.
package drivers
