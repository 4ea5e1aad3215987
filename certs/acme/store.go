package acme

import (
	"context"
	"errors"

	"github.com/chomhq/chom/models"
)

// StoreAccounts is the AccountStore over models.CertificateStore (which
// seals the account key, bound to its row). The CertificateStore is also
// the fleet-wide Budget.
type StoreAccounts struct {
	Store *models.CertificateStore
}

var (
	_ AccountStore = StoreAccounts{}
	_ Budget       = (*models.CertificateStore)(nil)
)

// LoadAccount reads the account of directoryURL and email (ErrNoAccount
// when there is none).
func (s StoreAccounts) LoadAccount(ctx context.Context, directoryURL, email string) (*Account, error) {
	a, err := s.Store.ACMEAccount(ctx, directoryURL, email)
	if errors.Is(err, models.ErrNotFound) {
		return nil, ErrNoAccount
	}
	if err != nil {
		return nil, err
	}
	return &Account{DirectoryURL: a.DirectoryURL, Email: a.Email, KeyPEM: a.KeyPEM, URI: a.URI}, nil
}

// CreateAccount stores acc unless one exists, and returns the stored one.
func (s StoreAccounts) CreateAccount(ctx context.Context, acc Account) (*Account, error) {
	a, err := s.Store.CreateACMEAccount(ctx, models.ACMEAccount{
		DirectoryURL: acc.DirectoryURL, Email: acc.Email, URI: acc.URI, KeyPEM: acc.KeyPEM})
	if err != nil {
		return nil, err
	}
	return &Account{DirectoryURL: a.DirectoryURL, Email: a.Email, KeyPEM: a.KeyPEM, URI: a.URI}, nil
}
