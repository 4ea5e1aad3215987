package acme

import (
	"context"
	"crypto"
	"errors"

	legoacme "github.com/go-acme/lego/v5/acme"
)

// ErrNoAccount: the store holds no account for the directory and email.
var ErrNoAccount = errors.New("acme: no account")

// Account is an ACME account of the platform at one CA.
type Account struct {
	// DirectoryURL is the CA's directory.
	DirectoryURL string
	// Email is the account's contact ("" for none).
	Email string
	// KeyPEM is the account's private key (ECDSA P-256), PEM; the store
	// seals it at rest.
	KeyPEM []byte
	// URI is the account's URL at the CA (its key ID for requests).
	URI string
}

// AccountStore keeps the platform's ACME accounts (models.CertificateStore
// implements it, sealing the key).
type AccountStore interface {
	// LoadAccount returns the account of directoryURL and email, or
	// ErrNoAccount.
	LoadAccount(ctx context.Context, directoryURL, email string) (*Account, error)
	// CreateAccount stores acc unless an account of its directory and email
	// exists, and returns the stored one: of two workers registering at
	// once, the first to store wins and both use its account.
	CreateAccount(ctx context.Context, acc Account) (*Account, error)
}

// user is lego's registration.User for an account.
type user struct {
	email string
	key   crypto.Signer
	reg   *legoacme.ExtendedAccount
}

func (u *user) GetEmail() string                           { return u.email }
func (u *user) GetRegistration() *legoacme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer               { return u.key }
