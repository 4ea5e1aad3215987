package jobs

import (
	"context"

	"github.com/chomhq/chom/certs/acme"
	"github.com/chomhq/chom/drivers"
)

// SitePresenter answers a site's ACME HTTP-01 challenges from the site's own
// server: the token is put, through the driver, where every domain of the
// site serves /.well-known/acme-challenge/ (so the domain lego names is not
// needed: one put serves them all).
func SitePresenter(d drivers.TLSDeployer, site drivers.SiteSpec) acme.HTTP01Presenter {
	return sitePresenter{d: d, site: site}
}

type sitePresenter struct {
	d    drivers.TLSDeployer
	site drivers.SiteSpec
}

func (p sitePresenter) Present(ctx context.Context, _, token, keyAuth string) error {
	return p.d.PutChallenge(ctx, p.site, token, keyAuth)
}

func (p sitePresenter) CleanUp(ctx context.Context, _, token string) error {
	return p.d.RemoveChallenge(ctx, p.site, token)
}
