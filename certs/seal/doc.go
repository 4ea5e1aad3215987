// Package seal encrypts small secrets at rest (ACME account keys,
// certificate private keys) with an AEAD and a key ring.
//
// The ring comes from configuration (CHOM_CERT_ENCRYPTION_KEYS): a
// comma-separated list of id:base64(32 bytes). The first key seals; every key
// opens. A sealed value is text, "v1:<id>:<base64(nonce|ciphertext)>", so it
// names the key that sealed it, and its associated data binds it to the row
// it belongs to ("certificate key of site X"): a sealed value copied onto
// another row does not open.
//
// Rotation: add the new key first in the list (keeping the old one after
// it), restart, re-seal every stored value (models.Store.Reseal), then drop
// the old key. docs/certificates.md has the procedure.
package seal
