package local_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/chomhq/chom/drivers"
	"github.com/chomhq/chom/drivers/local"
)

func Example() {
	root, err := os.MkdirTemp("", "chom-vps-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)

	prov, err := local.New(local.Config{Root: root, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	site := drivers.SiteSpec{
		ID:         "site_1",
		TenantID:   "ten_1",
		Domain:     "blog.example.com",
		SiteType:   drivers.SiteTypeWordPress,
		PHPVersion: "8.3",
		Server:     drivers.Server{ID: "vps_1"},
	}
	res, err := prov.Provision(context.Background(), site, func(_ context.Context, s drivers.Step) error {
		fmt.Printf("%-12s %3d%%\n", s.Name, s.Progress)
		return nil
	})
	if err != nil {
		panic(err)
	}
	rel := func(p string) string { r, _ := filepath.Rel(root, p); return r }
	fmt.Println("user:  ", res.SystemUser)
	fmt.Println("root:  ", rel(res.DocumentRoot))
	fmt.Println("nginx: ", rel(res.NginxConfig))
	fmt.Println("pool:  ", rel(res.PHPPool))
	// Output:
	// site_root     20%
	// index_page    40%
	// php_pool      60%
	// nginx_config  80%
	// reload       100%
	// user:   s_site_1
	// root:   vps_1/sites/blog.example.com/public
	// nginx:  vps_1/nginx/sites-enabled/blog.example.com.conf
	// pool:   vps_1/php/8.3/fpm/pool.d/blog.example.com.conf
}
