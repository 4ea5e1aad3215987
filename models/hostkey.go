package models

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
)

// HostKeySHA256 is the OpenSSH SHA-256 fingerprint ("SHA256:…", as
// `ssh-keygen -lf` prints it) of a pinned host key as VPSServer.HostKey
// holds it: computed from a key in authorized_keys form, or the pin itself
// when only a fingerprint is pinned; "" when nothing readable is pinned.
func HostKeySHA256(pin string) string {
	pin = strings.TrimSpace(pin)
	if pin == "" {
		return ""
	}
	if strings.HasPrefix(pin, "SHA256:") {
		return pin
	}
	f := strings.Fields(pin)
	if len(f) < 2 {
		return ""
	}
	wire, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(wire)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

var _ bun.AfterScanRowHook = (*VPSServer)(nil)

// AfterScanRow fills HostKeySHA256 from HostKey on every read.
func (v *VPSServer) AfterScanRow(context.Context) error {
	v.HostKeySHA256 = HostKeySHA256(v.HostKey)
	return nil
}

// RepinHostKey replaces the pinned SSH host key of server vpsID with pin (a
// key in authorized_keys form or its "SHA256:…" fingerprint): an admin's
// planned key change. Unlike PinHostKey it replaces a pin already set. An
// unknown server is ErrNotFound.
func (s *Store) RepinHostKey(ctx context.Context, vpsID, pin string) (*VPSServer, error) {
	res, err := s.db.NewUpdate().Model((*VPSServer)(nil)).
		Set("host_key = ?", pin).Set("updated_at = ?", s.nowUTC()).
		Where("id = ?", vpsID).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("repin host key of %s: %w", vpsID, err)
	}
	if affected(res) == 0 {
		return nil, fmt.Errorf("repin host key of %s: %w", vpsID, ErrNotFound)
	}
	return s.GetVPS(ctx, vpsID)
}
