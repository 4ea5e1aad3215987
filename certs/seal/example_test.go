package seal_test

import (
	"fmt"

	"github.com/chomhq/chom/certs/seal"
)

// A key ring from CHOM_CERT_ENCRYPTION_KEYS during a rotation: k2 (first)
// seals, k1 still opens what it sealed before.
func Example() {
	ring, err := seal.ParseKeys("k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=,k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		panic(err)
	}
	sealed, err := ring.Seal([]byte("-----BEGIN PRIVATE KEY-----..."), "chom/certificate-key/site/site_1")
	if err != nil {
		panic(err)
	}
	id, _ := seal.KeyID(sealed)
	key, err := ring.Open(sealed, "chom/certificate-key/site/site_1")
	fmt.Println(id, string(key), err)
	_, err = ring.Open(sealed, "chom/certificate-key/site/site_2")
	fmt.Println(err)
	// Output:
	// k2 -----BEGIN PRIVATE KEY-----... <nil>
	// seal: value does not open (tampered with, or sealed for another row)
}
