package local

import (
	"os"
	"strings"
	"testing"

	"github.com/chomhq/chom/drivers"
)

// MigrateLayout re-renders a site's configuration: a server block of an
// earlier layout (no disable_symlinks) is brought back, reported as a change,
// and a second run reports none.
func TestMigrateLayout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	site := spec(drivers.SiteTypePHP, "migrate.example")
	if _, err := b.prov.Provision(t.Context(), site, nil); err != nil {
		t.Fatal(err)
	}
	if changed, err := b.prov.MigrateLayout(t.Context(), site); err != nil || changed {
		t.Fatalf("MigrateLayout of a current site: %v, %v; want no change", changed, err)
	}
	sp, err := b.prov.paths(site)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(sp.nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.ReplaceAll(string(conf), "disable_symlinks if_not_owner from=$document_root;", "")
	if err := os.WriteFile(sp.nginxConf, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := b.prov.MigrateLayout(t.Context(), site); err != nil || !changed {
		t.Fatalf("MigrateLayout of an old server block: %v, %v; want changed", changed, err)
	}
	if got, _ := os.ReadFile(sp.nginxConf); string(got) != string(conf) {
		t.Errorf("server block after MigrateLayout:\n%s\nwant:\n%s", got, conf)
	}
	if changed, err := b.prov.MigrateLayout(t.Context(), site); err != nil || changed {
		t.Errorf("second MigrateLayout: %v, %v; want no change", changed, err)
	}
}
