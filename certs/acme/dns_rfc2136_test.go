package acme_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/chomhq/chom/certs/acme"
)

// updateServer is a small authoritative server for one zone on loopback TCP
// that applies RFC 2136 updates signed with its TSIG key and answers TXT
// queries: what BIND does with `allow-update { key chom; }`.
type updateServer struct {
	mu  sync.Mutex
	txt map[string][]string
}

func (s *updateServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg).SetReply(r)
	switch r.Opcode {
	case dns.OpcodeUpdate:
		if r.IsTsig() == nil || w.TsigStatus() != nil {
			m.Rcode = dns.RcodeNotAuth
			break
		}
		s.mu.Lock()
		for _, rr := range r.Ns {
			t, ok := rr.(*dns.TXT)
			name := strings.ToLower(rr.Header().Name)
			switch {
			case rr.Header().Class == dns.ClassANY: // delete the RRset
				delete(s.txt, name)
			case rr.Header().Class == dns.ClassNONE && ok: // delete one record
				s.txt[name] = slices.DeleteFunc(s.txt[name], func(v string) bool { return v == t.Txt[0] })
			case ok:
				s.txt[name] = append(s.txt[name], t.Txt[0])
			}
		}
		s.mu.Unlock()
	default:
		q := r.Question[0]
		s.mu.Lock()
		for _, v := range s.txt[strings.ToLower(q.Name)] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{v}})
		}
		s.mu.Unlock()
	}
	if r.IsTsig() != nil {
		m.SetTsig(r.IsTsig().Hdr.Name, dns.HmacSHA256, 300, time.Now().Unix())
	}
	_ = w.WriteMsg(m)
}

func TestRFC2136(t *testing.T) {
	t.Parallel()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &updateServer{txt: map[string][]string{}}
	srv := &dns.Server{Listener: ln, Handler: s, TsigSecret: map[string]string{"chom.": secret},
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	addr := ln.Addr().String()

	key, alg, sec, err := acme.ParseTSIG("chom:hmac-sha256:" + secret)
	if err != nil {
		t.Fatal(err)
	}
	p, err := acme.NewRFC2136(acme.RFC2136Config{Nameserver: addr, Zone: "example.test", TSIGKey: key, TSIGAlgorithm: alg, TSIGSecret: sec})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func() []string {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}}
		txt, _ := r.LookupTXT(t.Context(), "_acme-challenge.a.example.test.")
		return txt
	}
	ctx := t.Context()
	if err := p.Present(ctx, "_acme-challenge.a.example.test.", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Present(ctx, "_acme-challenge.a.example.test.", "v2"); err != nil {
		t.Fatal(err)
	}
	// Present replaces a leftover set: only the latest value is served.
	if got := lookup(); !slices.Equal(got, []string{"v2"}) {
		t.Fatalf("TXT after Present = %v, want [v2]", got)
	}
	if err := p.CleanUp(ctx, "_acme-challenge.a.example.test.", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); len(got) != 0 {
		t.Fatalf("TXT after CleanUp = %v, want none", got)
	}

	// A wrong secret is refused by the server; a name outside the zone is refused here.
	bad, _ := acme.NewRFC2136(acme.RFC2136Config{Nameserver: addr, Zone: "example.test", TSIGKey: "chom", TSIGSecret: "d3Jvbmc="})
	if err := bad.Present(ctx, "_acme-challenge.a.example.test.", "x"); err == nil {
		t.Error("an update signed with the wrong secret was accepted")
	}
	if err := p.Present(ctx, "_acme-challenge.other.test.", "x"); err == nil || !strings.Contains(err.Error(), "not in zone") {
		t.Errorf("outside the zone: %v", err)
	}
	if _, err := acme.NewRFC2136(acme.RFC2136Config{Nameserver: "nohostport", TSIGKey: "k"}); err == nil ||
		!strings.Contains(err.Error(), "host:port") || !strings.Contains(err.Error(), "zone") || !strings.Contains(err.Error(), "go together") {
		t.Errorf("bad config: %v; want every problem named", err)
	}
}
