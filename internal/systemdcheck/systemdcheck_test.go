package systemdcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const unitDir = "../../deploy/systemd"

// requireAnalyze skips the test, or fails it when CI is set, without
// systemd-analyze (Debian: the systemd package).
func requireAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("systemd-analyze not found and CI=%q: install systemd (apt-get install systemd)", os.Getenv("CI"))
	}
	t.Skip("systemd-analyze not found; install systemd")
}

// Every unit in deploy/systemd is known, every long-running role has one,
// each passes verify without a warning and scores at most MaxExposure.
func TestUnits(t *testing.T) {
	t.Parallel()
	requireAnalyze(t)
	files, err := filepath.Glob(filepath.Join(unitDir, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for file := range Units {
		if !slices.Contains(names, file) {
			t.Errorf("deploy/systemd/%s is missing", file)
		}
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(ExecPath) + ` (\S+)`)
	var roles []string
	for _, n := range names {
		if _, ok := Units[n]; !ok {
			t.Errorf("deploy/systemd/%s is not in systemdcheck.Units: add it, so that it is analysed", n)
		}
		b, err := os.ReadFile(filepath.Join(unitDir, n))
		if err != nil {
			t.Fatal(err)
		}
		m := execStart.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s: no ExecStart=%s <command>", n, ExecPath)
			continue
		}
		roles = append(roles, string(m[1]))
	}
	for _, role := range []string{"ingress", "worker", "scheduler", "relay", "billing-consumer", "migrate"} {
		if !slices.Contains(roles, role) {
			t.Errorf("no unit runs chom %s", role)
		}
	}

	start := time.Now()
	root, err := NewRoot(t.Context(), t.TempDir(), unitDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range sortedKeys() {
		unit := Units[file]
		if _, err := root.Verify(t.Context(), unit); err != nil {
			t.Error(err)
		}
		score, table, err := root.Exposure(t.Context(), unit)
		if err != nil {
			t.Errorf("%v\n%s", err, table)
			continue
		}
		t.Logf("%-32s verify: clean; exposure %.1f (at most %.1f)", unit, score, MaxExposure)
	}
	t.Logf("verify and security of %d units: %s", len(Units), time.Since(start).Round(time.Millisecond))
}

// Each check fails on a planted mistake: a misspelt directive, a binary at
// another path, and the sandbox's main lines removed.
func TestPlantedMistakes(t *testing.T) {
	t.Parallel()
	requireAnalyze(t)
	src, err := os.ReadFile(filepath.Join(unitDir, "chom-ingress.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, old, new string
		exposure       bool // the exposure check must fail (else verify)
	}{
		{"a misspelt directive", "ProtectSystem=strict", "ProtectSytem=strict", false},
		{"a bad value", "Restart=always", "Restart=sometimes", false},
		{"the binary elsewhere", "ExecStart=/usr/local/bin/chom", "ExecStart=/usr/bin/chom", false},
		{"capabilities and syscalls unrestricted", "CapabilityBoundingSet=\n", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text := string(src)
			if !strings.Contains(text, c.old) {
				t.Fatalf("chom-ingress.service has no %q", c.old)
			}
			text = strings.Replace(text, c.old, c.new, 1)
			if c.exposure {
				// Drop the whole system-call filter too: one line less is
				// within the threshold on purpose.
				text = regexp.MustCompile(`(?m)^SystemCall\w+=.*\n`).ReplaceAllString(text, "")
			}
			dir := t.TempDir()
			units := filepath.Join(dir, "units")
			if err := os.MkdirAll(units, 0o755); err != nil {
				t.Fatal(err)
			}
			// The other units as they are (the ingress requires chom-migrate), the
			// ingress's with the mistake.
			for file := range Units {
				b, err := os.ReadFile(filepath.Join(unitDir, file))
				if err != nil {
					t.Fatal(err)
				}
				if file == "chom-ingress.service" {
					b = []byte(text)
				}
				if err := os.WriteFile(filepath.Join(units, file), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			root, err := NewRoot(t.Context(), filepath.Join(dir, "root"), units)
			if err != nil {
				t.Fatal(err)
			}
			if c.exposure {
				score, _, err := root.Exposure(t.Context(), "chom-ingress.service")
				if err == nil {
					t.Fatalf("exposure %.1f passed", score)
				}
				t.Logf("planted %s: %v", c.name, err)
				return
			}
			_, err = root.Verify(t.Context(), "chom-ingress.service")
			if err == nil {
				t.Fatal("verify passed")
			}
			t.Logf("planted %s: %s", c.name, strings.TrimSpace(err.Error()))
		})
	}
}

func sortedKeys() []string {
	var keys []string
	for k := range Units {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
