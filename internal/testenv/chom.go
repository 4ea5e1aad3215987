package testenv

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ChomPackage is the import path of the chom command.
const ChomPackage = "github.com/chomhq/chom/cmd/chom"

// BuildChom builds the chom command into dir, with the race detector when race
// is set, and returns the binary's path; the compiler's output goes to the
// error.
func BuildChom(dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "chom")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ChomPackage)...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", ChomPackage, err, out)
	}
	return bin, nil
}

// ChomMain is the TestMain of a package whose tests run the chom binary as an
// operator would: it builds it once into a temporary directory (with the race
// detector when race), stores its path in *bin, runs the tests and removes it.
// When every test would skip itself (-short, or no test servers outside CI) it
// builds nothing. name prefixes its messages.
func ChomMain(m *testing.M, name string, race bool, bin *string) {
	flag.Parse()
	haveServers := os.Getenv(EnvDatabaseURL) != "" && os.Getenv(EnvRedisURL) != ""
	if testing.Short() || (!haveServers && os.Getenv(EnvCI) == "") {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "chom-"+name+"-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	start := time.Now()
	if *bin, err = BuildChom(dir, race); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "%s: built %s (race detector: %v) in %s\n", name, *bin, race, time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// RunChom runs `bin args…` with env to completion (within a minute) and
// returns its standard output; it fails the test when the command fails,
// showing its standard error.
func RunChom(tb testing.TB, bin string, env []string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("chom %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
