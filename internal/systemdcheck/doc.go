// Package systemdcheck holds the checks of CHOM's systemd units
// (deploy/systemd): there is one unit for every long-running role, each
// passes `systemd-analyze verify` with no warning, and each one's exposure
// score from `systemd-analyze security --offline=true` is at most
// MaxExposure. The units are analysed under a temporary root that holds
// them, the host's system units and a placeholder /usr/local/bin/chom, so
// nothing is installed on the machine and no PID 1 systemd is needed.
package systemdcheck
