package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// servingCert is the ACME directory's TLS certificate and the root that
// signed it.
type servingCert struct {
	cert    tls.Certificate
	rootPEM []byte
}

// newServingCert makes an ECDSA P-256 root and a certificate it signs for
// 127.0.0.1, ::1 and localhost, valid from an hour before now for a year
// (the CA is made anew at each start). The root's key is dropped: nothing
// else is ever signed with it.
func newServingCert(now time.Time) (servingCert, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: root key: %w", err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: serving key: %w", err)
	}
	serial := func() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) }
	rootSerial, err := serial()
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: serial: %w", err)
	}
	leafSerial, err := serial()
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: serial: %w", err)
	}
	notBefore, notAfter := now.Add(-time.Hour), now.Add(365*24*time.Hour)
	root := &x509.Certificate{
		SerialNumber:          rootSerial,
		Subject:               pkix.Name{CommonName: "CHOM dev ACME server root " + rootSerial.Text(16)[:6]},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: root certificate: %w", err)
	}
	if root, err = x509.ParseCertificate(rootDER); err != nil {
		return servingCert{}, fmt.Errorf("devca: root certificate: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: leafSerial,
		Subject:      pkix.Name{CommonName: "CHOM dev ACME server"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		return servingCert{}, fmt.Errorf("devca: serving certificate: %w", err)
	}
	return servingCert{
		cert:    tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
	}, nil
}
