package fsstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.BackupStore = (*Store)(nil)

const (
	dirPerm  fs.FileMode = 0o750
	filePerm fs.FileMode = 0o640
	// tempPrefix starts every temporary file; drivers.ValidateBackupKey refuses
	// segments starting with '.', so no key names one.
	tempPrefix = ".put-"
)

// Config configures a Store.
type Config struct {
	// Dir is the absolute path of the directory that holds the objects. It is
	// created (0750) by New when missing.
	Dir string
}

// Validate reports every problem with c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Dir == "":
		errs = append(errs, errors.New("dir is required"))
	case !filepath.IsAbs(c.Dir):
		errs = append(errs, fmt.Errorf("dir %q must be an absolute path", c.Dir))
	case filepath.Clean(c.Dir) == "/":
		errs = append(errs, errors.New("dir must not be /"))
	}
	return errors.Join(errs...)
}

// Store keeps each object as the file <Dir>/<key>. It is safe for concurrent
// use, also by several processes sharing Dir.
type Store struct {
	dir  string
	root *os.Root
}

// New creates cfg.Dir if needed and returns a Store on it, or an error naming
// every problem with cfg or why the directory cannot be opened.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fsstore: invalid config: %w", err)
	}
	dir := filepath.Clean(cfg.Dir)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("fsstore: create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("fsstore: open %s: %w", dir, err)
	}
	return &Store{dir: dir, root: root}, nil
}

// Close releases the directory handle. The Store must not be used afterwards.
func (s *Store) Close() error {
	return s.root.Close()
}

// Put stores what r yields under key and returns its size and hex SHA-256. It
// streams r into a temporary file in the key's directory, fsyncs it and renames
// it over key, so an error (from r, the disk, or ctx ending) leaves whatever
// was under key before, and no temporary file.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (size int64, sha256Hex string, err error) {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return 0, "", fmt.Errorf("fsstore: put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	dir := path.Dir(key)
	if dir != "." {
		if err := s.root.MkdirAll(dir, dirPerm); err != nil {
			return 0, "", fmt.Errorf("fsstore: put %s: create directory: %w", key, err)
		}
	}
	tmp, f, err := s.createTemp(dir)
	if err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = f.Close()
			_ = s.root.Remove(tmp)
		}
	}()

	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), ctxReader{ctx: ctx, r: r})
	if err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: after %d bytes: %w", key, size, err)
	}
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: sync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: close: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	if err := s.root.Rename(tmp, key); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	committed = true
	// The rename is durable only once the directory is synced; the object is
	// already whole and visible, so a failure here is reported but not undone.
	if err := s.syncDir(dir); err != nil {
		return 0, "", fmt.Errorf("fsstore: put %s: sync directory: %w", key, err)
	}
	return size, hex.EncodeToString(h.Sum(nil)), nil
}

// createTemp creates a new, empty temporary file in dir (relative to the root).
func (s *Store) createTemp(dir string) (string, *os.File, error) {
	for range 10 {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", nil, fmt.Errorf("temporary name: %w", err)
		}
		name := path.Join(dir, tempPrefix+hex.EncodeToString(b[:]))
		f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("create temporary file: %w", err)
		}
		return name, f, nil
	}
	return "", nil, errors.New("create temporary file: 10 names taken")
}

func (s *Store) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns the file under key, opened for reading (an *os.File), or an
// error wrapping drivers.ErrNotFound when there is none.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return nil, fmt.Errorf("fsstore: open: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fsstore: open %s: %w", key, err)
	}
	f, err := s.root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("fsstore: open %s: %w", key, drivers.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("fsstore: open %s: %w", key, err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fsstore: open %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		// A directory made for longer keys ("a" when "a/b" exists) is no object.
		_ = f.Close()
		return nil, fmt.Errorf("fsstore: open %s: %w", key, drivers.ErrNotFound)
	}
	return f, nil
}

// Delete removes the file under key; a missing one is not an error. Emptied
// directories are left in place (a concurrent Put may be about to use them).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return fmt.Errorf("fsstore: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	info, err := s.root.Lstat(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		return nil // a directory of longer keys: no object under this key
	}
	if err := s.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
