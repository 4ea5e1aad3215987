package local

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

// TestDownMarker: a server marked down (DownMarker in its directory) is
// unreachable for Provision and Deprovision, which change nothing; once the
// marker is removed both work again.
func TestDownMarker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	up := spec("php", "up.example.com")
	if _, err := b.prov.Provision(ctx, up, nil); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(b.root, "vps_1", DownMarker)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := tree(t, b.root)

	next := spec("html", "next.example.com")
	var steps recorder
	if _, err := b.prov.Provision(ctx, next, steps.progress); !errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("Provision on a down server: %v, want ErrUnreachable", err)
	}
	if err := b.prov.Deprovision(ctx, up); !errors.Is(err, drivers.ErrUnreachable) {
		t.Fatalf("Deprovision on a down server: %v, want ErrUnreachable", err)
	}
	if len(steps.steps) != 0 {
		t.Errorf("steps reported on a down server: %v", steps.steps)
	}
	if diff := cmp.Diff(before, tree(t, b.root)); diff != "" {
		t.Fatalf("a down server changed (-before +after):\n%s", diff)
	}

	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if _, err := b.prov.Provision(ctx, next, nil); err != nil {
		t.Fatalf("Provision once back: %v", err)
	}
	if err := b.prov.Deprovision(ctx, up); err != nil {
		t.Fatalf("Deprovision once back: %v", err)
	}
}
