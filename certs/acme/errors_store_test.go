package acme_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/chomhq/chom/certs/acme"
)

// brokenAccounts is an AccountStore whose database is down.
type brokenAccounts struct{}

func (brokenAccounts) LoadAccount(context.Context, string, string) (*acme.Account, error) {
	return nil, errors.New("dial tcp 127.0.0.1:5432: connection refused")
}

func (brokenAccounts) CreateAccount(context.Context, acme.Account) (*acme.Account, error) {
	return nil, errors.New("unreachable")
}

// The database holding the account down: CHOM's side failed, retry; the
// CA is never blamed.
func TestIssuerStoreDown(t *testing.T) {
	t.Parallel()
	iss, err := acme.New(acme.Config{DirectoryURL: "https://127.0.0.1:1/dir", Accounts: brokenAccounts{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = iss.Issue(t.Context(), acme.Request{Domains: []string{"a.example.test"}, Challenge: acme.HTTP01, HTTP01: &webroot{}})
	e := wantCode(t, err, acme.CodeInternal, true)
	t.Logf("store down: %s", e.Message)
}
