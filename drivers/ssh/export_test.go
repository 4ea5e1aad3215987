package ssh

import (
	"context"
	"path"
	"time"

	"github.com/chomhq/chom/drivers"
)

// Quote and Command expose the quoting functions to the tests of package
// ssh_test.
var (
	Quote   = quote
	Command = command
)

// ScanLog reads one log file of site's log directory through the driver's
// remote reader, as Bandwidth does for each file it lists, so a test can hand
// it what a listing would never name (a link, a fifo): the reader itself must
// refuse them, since a name can change between the listing and the read.
func (p *Provisioner) ScanLog(ctx context.Context, site drivers.SiteSpec, name string, start, end time.Time) (drivers.Bandwidth, error) {
	sp, s, err := p.start(site)
	if err != nil {
		return drivers.Bandwidth{}, err
	}
	return p.scanLog(ctx, s, path.Join(sp.logDir, name), start, end, map[string]bool{})
}

// HTTP2Listen exposes http2Listen to the tests.
var HTTP2Listen = http2Listen

// TLSState is what parseTLSState read from the server's answer.
type TLSState struct {
	Provisioned bool
	Deployed    bool
	HSTSMaxAge  int64
	OCSP        bool
	Nginx       string
	Resolvers   []string
}

// ParseTLSState exposes parseTLSState to the tests.
func ParseTLSState(out string) TLSState {
	st := parseTLSState(out)
	return TLSState{Provisioned: st.provisioned, Deployed: st.deployed, HSTSMaxAge: st.hstsMaxAge, OCSP: st.ocsp, Nginx: st.nginx, Resolvers: st.resolvers}
}
