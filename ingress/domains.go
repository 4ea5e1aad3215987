package ingress

import (
	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/domainverify"
	"github.com/chomhq/chom/models"
)

// VerificationView is the answer of GET /sites/{id}/verification: the site's
// status and, per domain (its domain first, then its aliases), whether it is
// verified and how to prove it. Shown to the site's tenant only.
type VerificationView struct {
	SiteID  string                   `json:"site_id"`
	Status  string                   `json:"status"`
	Domains []DomainVerificationView `json:"domains"`
}

// DomainVerificationView is one domain of a VerificationView. An unverified
// domain carries both ways to prove it; Required says whether the site's
// provisioning waits for it (an unverified domain that is not required can
// still be proven, so that no other account can take it later).
type DomainVerificationView struct {
	Domain   string         `json:"domain"`
	Verified bool           `json:"verified"`
	Required bool           `json:"required"`
	DNS      *DNSChallenge  `json:"dns,omitempty"`
	HTTP     *HTTPChallenge `json:"http,omitempty"`
}

// DNSChallenge is the TXT record that proves a domain.
type DNSChallenge struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPChallenge is the URL that proves a domain by answering Body.
type HTTPChallenge struct {
	URL  string `json:"url"`
	Body string `json:"body"`
}

func (a *API) getVerification(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	site, claims, err := a.store.TenantSiteClaims(ctx, principal(c).TenantID, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	view := VerificationView{SiteID: site.ID, Status: site.Status, Domains: make([]DomainVerificationView, 0, len(claims))}
	for _, cl := range claims {
		d := DomainVerificationView{Domain: cl.Domain, Verified: cl.State == models.ClaimProven, Required: cl.State == models.ClaimPending}
		if !d.Verified {
			d.DNS = &DNSChallenge{Type: "TXT", Name: domainverify.RecordName(cl.Domain), Value: cl.Token}
			d.HTTP = &HTTPChallenge{URL: domainverify.ChallengeURL(cl.Domain, cl.Token), Body: cl.Token}
		}
		view.Domains = append(view.Domains, d)
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(200, view)
}

func (a *API) startVerification(c *gin.Context) {
	a.mutateByID(c, models.PrefixSite, "site_id", a.store.StartVerification)
}
