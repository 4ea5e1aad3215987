package testenv_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/chomhq/chom/internal/testenv"
)

// TestChallTestSrv checks the kit's DNS server answers the records set
// through its management API, over a real UDP connection.
func TestChallTestSrv(t *testing.T) {
	srv := testenv.StartChallTestSrv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &net.Resolver{PreferGo: true, Dial: srv.Dial}

	if err := srv.SetTXT(ctx, "_chom-challenge.a.test", "token-1"); err != nil {
		t.Fatal(err)
	}
	txt, err := r.LookupTXT(ctx, "_chom-challenge.a.test")
	if err != nil || !slices.Equal(txt, []string{"token-1"}) {
		t.Fatalf("TXT = %q, %v; want [token-1]", txt, err)
	}
	if err := srv.ClearTXT(ctx, "_chom-challenge.a.test"); err != nil {
		t.Fatal(err)
	}
	if txt, err := r.LookupTXT(ctx, "_chom-challenge.a.test"); err == nil && len(txt) > 0 {
		t.Fatalf("TXT after clear = %q", txt)
	}

	if addrs, err := r.LookupHost(ctx, "a.test"); err != nil || !slices.Equal(addrs, []string{"127.0.0.1"}) {
		t.Fatalf("default A = %q, %v; want [127.0.0.1]", addrs, err)
	}
	if err := srv.AddA(ctx, "b.test", "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	if addrs, err := r.LookupHost(ctx, "b.test"); err != nil || !slices.Equal(addrs, []string{"192.0.2.7"}) {
		t.Fatalf("A = %q, %v; want [192.0.2.7]", addrs, err)
	}
}
