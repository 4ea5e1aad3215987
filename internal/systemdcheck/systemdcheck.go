package systemdcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// MaxExposure is the highest overall exposure score (systemd-analyze
// security, 0 safest to 10) a unit may have. The units score 1.1: what
// remains open is what a networked control plane needs (Internet and local
// sockets, the host's network namespace, no IP allow list since it talks to
// any server it manages) and a root directory of the host. 2.0 leaves room
// for one of those to be argued, not for a dropped block of the sandbox
// (without CapabilityBoundingSet= and the system-call filter a unit scores
// 4.6: TestPlantedMistakes).
const MaxExposure = 2.0

// Units maps each unit file in deploy/systemd to the name it is analysed
// under (a template's instance: a worker on /metrics port 9464).
var Units = map[string]string{
	"chom-migrate.service":          "chom-migrate.service",
	"chom-ingress.service":          "chom-ingress.service",
	"chom-worker@.service":          "chom-worker@9464.service",
	"chom-scheduler.service":        "chom-scheduler.service",
	"chom-relay.service":            "chom-relay.service",
	"chom-billing-consumer.service": "chom-billing-consumer.service",
}

// ExecPath is where the units expect the chom binary.
const ExecPath = "/usr/local/bin/chom"

// Root is a temporary root file system for systemd-analyze: the units under
// etc/systemd/system, the host's /usr/lib/systemd/system (verify resolves
// sysinit.target and friends there) and an executable placeholder at
// ExecPath (verify only checks that it exists and is executable).
type Root string

// NewRoot builds a Root in dir from the unit files of unitDir.
func NewRoot(ctx context.Context, dir, unitDir string) (Root, error) {
	units := filepath.Join(dir, "etc", "systemd", "system")
	for _, d := range []string{units, filepath.Join(dir, "usr", "lib", "systemd"), filepath.Join(dir, filepath.Dir(ExecPath))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("analysis root: %w", err)
		}
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(dir, "usr", "lib", "systemd")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy the system units: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ExecPath), nil, 0o755); err != nil {
		return "", fmt.Errorf("placeholder binary: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(unitDir, "*.service"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(units, filepath.Base(f)), b, 0o644); err != nil {
			return "", err
		}
	}
	return Root(dir), nil
}

// Verify runs systemd-analyze verify on unit and returns its output. Any
// output is a finding: verify exits 0 on an unknown key or a bad value, it
// only warns.
func (r Root) Verify(ctx context.Context, unit string) (string, error) {
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", "--root="+string(r), unit).CombinedOutput()
	switch {
	case err != nil:
		return string(out), fmt.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	case len(bytes.TrimSpace(out)) > 0:
		return string(out), fmt.Errorf("systemd-analyze verify %s warns:\n%s", unit, out)
	}
	return "", nil
}

var overall = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+)`)

// Exposure runs systemd-analyze security --offline=true on unit with
// MaxExposure as the threshold and returns the unit's score and the full
// table. It fails when the score is above MaxExposure (systemd-analyze's own
// exit status, and the parsed score: either one catches it).
func (r Root) Exposure(ctx context.Context, unit string) (float64, string, error) {
	threshold := strconv.Itoa(int(MaxExposure * 10)) // the scale is 0..100
	out, err := exec.CommandContext(ctx, "systemd-analyze", "security", "--offline=true", "--root="+string(r),
		"--threshold="+threshold, "--no-pager", unit).CombinedOutput()
	m := overall.FindSubmatch(out)
	if m == nil {
		return 0, string(out), fmt.Errorf("systemd-analyze security %s: no overall score (%v):\n%s", unit, err, out)
	}
	score, perr := strconv.ParseFloat(string(m[2]), 64)
	switch {
	case perr != nil:
		return 0, string(out), fmt.Errorf("systemd-analyze security %s: score %q: %w", unit, m[2], perr)
	case err != nil || score > MaxExposure:
		return score, string(out), fmt.Errorf("%s: exposure %.1f, over %.1f (systemd-analyze: %v)", unit, score, MaxExposure, err)
	}
	return score, string(out), nil
}
