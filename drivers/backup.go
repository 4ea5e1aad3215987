package drivers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Backup types: what an archive holds. They are stored and sent over the wire,
// so they never change once shipped.
const (
	// BackupFull is the site's files and, when it has one, its database.
	BackupFull = "full"
	// BackupFiles is the site's document root only.
	BackupFiles = "files"
	// BackupDatabase is the site's database dump only (sites with a database).
	BackupDatabase = "database"
)

// ArchiveFormat is the format of every archive a BackupSource writes and reads:
// a tar stream compressed with gzip. Inside, the document root's content is
// under "files/" and the database dump, when there is one, is "database.sql".
const ArchiveFormat = "tar+gzip"

// HasDatabase reports whether sites of s's type get a MariaDB/MySQL database
// (wordpress and laravel).
func (s SiteSpec) HasDatabase() bool {
	return s.SiteType == SiteTypeWordPress || s.SiteType == SiteTypeLaravel
}

// BackupSource makes and restores archives of a site on its server.
type BackupSource interface {
	// Archive writes an ArchiveFormat stream of site to w: the files for
	// BackupFiles and BackupFull, the database dump for BackupDatabase and
	// BackupFull (when the site has a database). It streams: its memory does not
	// grow with the site's size. A spec that fails ValidateSiteSpec is an error
	// wrapping ErrInvalidSpec and writes nothing.
	Archive(ctx context.Context, site SiteSpec, kind string, w io.Writer) error
	// Restore puts back what an archive of kind read from r holds. It changes
	// the live site only after r has been read to EOF without error (it stages,
	// then swaps), so a reader that fails at EOF, as VerifyReader does on a
	// checksum mismatch, leaves the site exactly as it was.
	Restore(ctx context.Context, site SiteSpec, kind string, r io.Reader) error
}

// ErrNotFound is wrapped when a stored object does not exist.
var ErrNotFound = errors.New("drivers: not found")

// BackupStore keeps archives under keys made by the caller (characters
// [a-z0-9_./-], no "..", no leading "/").
type BackupStore interface {
	// Put stores what r yields under key, replacing any object there, and
	// returns its size and hex SHA-256. It streams; an error leaves no partial
	// object visible under key.
	Put(ctx context.Context, key string, r io.Reader) (size int64, sha256Hex string, err error)
	// Open returns the object under key, or an error wrapping ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes the object under key; a missing one is not an error.
	Delete(ctx context.Context, key string) error
}

// ErrCorruptArchive is returned by a VerifyReader whose stream does not match
// the recorded size or SHA-256, and by a BackupSource's Restore when the
// archive does not hold what its kind needs (no files, no database dump, a
// dump that does not import). It is permanent: the archive is damaged.
var ErrCorruptArchive = errors.New("drivers: archive does not match its recorded size and checksum")

// VerifyReader returns a reader of r that, at EOF, returns an error wrapping
// ErrCorruptArchive instead of io.EOF when what was read is not size bytes with
// the hex SHA-256 sha256Hex. Reading past size fails at once.
func VerifyReader(r io.Reader, size int64, sha256Hex string) io.Reader {
	return &verifyReader{r: r, want: size, sum: sha256Hex, h: sha256.New()}
}

type verifyReader struct {
	r    io.Reader
	want int64
	sum  string
	h    hash.Hash
	n    int64
	err  error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	switch {
	case v.n > v.want:
		v.err = fmt.Errorf("%w: more than %d bytes", ErrCorruptArchive, v.want)
		return n, v.err
	case errors.Is(err, io.EOF):
		if got := hex.EncodeToString(v.h.Sum(nil)); v.n != v.want || got != v.sum {
			v.err = fmt.Errorf("%w: read %d bytes with sha256 %s, recorded %d bytes with %s", ErrCorruptArchive, v.n, got, v.want, v.sum)
			return n, v.err
		}
		v.err = io.EOF
	case err != nil:
		v.err = err
	}
	return n, err
}
