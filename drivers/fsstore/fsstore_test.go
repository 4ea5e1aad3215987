package fsstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers"
)

type testBundle struct {
	store *Store
	dir   string
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "backups")
	store, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return &testBundle{store: store, dir: dir}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// files lists every file and directory under dir, relative and slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

func read(t *testing.T, s *Store, key string) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{"ok", Config{Dir: "/var/lib/chom/backups"}, ""},
		{"missing", Config{}, "dir is required"},
		{"relative", Config{Dir: "backups"}, "must be an absolute path"},
		{"root", Config{Dir: "/"}, "must not be /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	// More than io.Copy's 32 KiB buffer, so the copy loops.
	content := bytes.Repeat([]byte("chom backup\n"), 100_000)
	const key = "ten_1/site_1/bkp_1.tar.gz"

	size, got, err := b.store.Put(ctx, key, bytes.NewReader(content))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if size != int64(len(content)) || got != sum(content) {
		t.Fatalf("Put = %d, %s; want %d, %s", size, got, len(content), sum(content))
	}
	if !bytes.Equal(read(t, b.store, key), content) {
		t.Fatal("Open returned other content than Put stored")
	}
	rc, err := b.store.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File", rc)
	}
	rc.Close()

	// Replace, then an empty object.
	if _, _, err := b.store.Put(ctx, key, strings.NewReader("v2")); err != nil {
		t.Fatalf("Put v2: %v", err)
	}
	if got := string(read(t, b.store, key)); got != "v2" {
		t.Fatalf("after replace: %q, want v2", got)
	}
	size, got, err = b.store.Put(ctx, "empty", strings.NewReader(""))
	if err != nil || size != 0 || got != sum(nil) {
		t.Fatalf("Put empty = %d, %s, %v", size, got, err)
	}

	if err := b.store.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := b.store.Open(ctx, key); !errors.Is(err, drivers.ErrNotFound) {
		t.Fatalf("Open after Delete: %v, want ErrNotFound", err)
	}
	if err := b.store.Delete(ctx, key); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	// The directory of longer keys is not an object.
	if _, err := b.store.Open(ctx, "ten_1/site_1"); !errors.Is(err, drivers.ErrNotFound) {
		t.Fatalf("Open of a directory: %v, want ErrNotFound", err)
	}
	if err := b.store.Delete(ctx, "ten_1"); err != nil {
		t.Fatalf("Delete of a directory: %v", err)
	}
	if diff := cmp.Diff([]string{"empty", "ten_1", "ten_1/site_1"}, files(t, b.dir)); diff != "" {
		t.Errorf("files left (-want +got):\n%s", diff)
	}
}

func TestConcurrentPutsOfOneKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const writers = 8
	contents := make([][]byte, writers)
	sums := map[string]bool{}
	for i := range contents {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 256<<10+i)
		sums[sum(contents[i])] = true
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, got, err := b.store.Put(t.Context(), "site/latest.tar.gz", bytes.NewReader(contents[i]))
			if err == nil && got != sum(contents[i]) {
				err = fmt.Errorf("writer %d: sha256 %s, want %s", i, got, sum(contents[i]))
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := sum(read(t, b.store, "site/latest.tar.gz")); !sums[got] {
		t.Fatalf("stored object (sha256 %s) is none of the %d written whole", got, writers)
	}
	if diff := cmp.Diff([]string{"site", "site/latest.tar.gz"}, files(t, b.dir)); diff != "" {
		t.Errorf("files left (-want +got):\n%s", diff)
	}
}

// failingReader yields n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func TestFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	boom := errors.New("ssh: connection lost")
	tests := []struct {
		name   string
		before string // object under the key before the failed Put; "" for none
		reader func(cancel context.CancelFunc) io.Reader
		want   error
	}{
		{"reader fails, new key", "", func(context.CancelFunc) io.Reader { return &failingReader{n: 1 << 20, err: boom} }, boom},
		{"reader fails, old object kept", "old", func(context.CancelFunc) io.Reader { return &failingReader{n: 1 << 20, err: boom} }, boom},
		{"context cancelled mid-copy", "old", func(cancel context.CancelFunc) io.Reader {
			return io.MultiReader(strings.NewReader("part one"), readerFunc(func([]byte) (int, error) { cancel(); return 0, io.EOF }), &failingReader{n: 1 << 20, err: io.EOF})
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			const key = "t/s/b.tar.gz"
			var want []string
			if tt.before != "" {
				if _, _, err := b.store.Put(t.Context(), key, strings.NewReader(tt.before)); err != nil {
					t.Fatal(err)
				}
				want = []string{"t", "t/s", "t/s/b.tar.gz"}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, _, err := b.store.Put(ctx, key, tt.reader(cancel))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Put = %v, want an error wrapping %v", err, tt.want)
			}
			if tt.before == "" {
				if _, err := b.store.Open(t.Context(), key); !errors.Is(err, drivers.ErrNotFound) {
					t.Fatalf("Open after failed Put: %v, want ErrNotFound", err)
				}
				want = []string{"t", "t/s"} // the directory stays, empty
			} else if got := string(read(t, b.store, key)); got != tt.before {
				t.Fatalf("after failed Put the object is %q, want %q", got, tt.before)
			}
			if diff := cmp.Diff(want, files(t, b.dir)); diff != "" {
				t.Errorf("files left (-want +got):\n%s", diff)
			}
		})
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestHostileKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A file beside the store's directory that no key may reach, and a link
	// inside it pointing there.
	outside := filepath.Join(filepath.Dir(b.dir), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(b.dir), filepath.Join(b.dir, "escape")); err != nil {
		t.Fatal(err)
	}
	keys := []string{
		"", "/etc/passwd", "../secret", "a/../../secret", "..", ".", "a/./b", "a//b", "a/", "/",
		".put-0123", "a/.hidden", "A/B", "a b", "a\\b", "a\x00b", "a\nb", "ü", "a;rm -rf",
		strings.Repeat("a", drivers.MaxBackupKeyLen+1),
	}
	for _, key := range keys {
		t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if _, _, err := b.store.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Put = %v, want ErrInvalidKey", err)
			}
			if _, err := b.store.Open(ctx, key); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Open = %v, want ErrInvalidKey", err)
			}
			if err := b.store.Delete(ctx, key); !errors.Is(err, drivers.ErrInvalidKey) {
				t.Errorf("Delete = %v, want ErrInvalidKey", err)
			}
		})
	}
	// Valid keys through the planted link: os.Root refuses to leave the directory.
	t.Run("through a symlink", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		if _, err := b.store.Open(ctx, "escape/secret"); err == nil || errors.Is(err, drivers.ErrInvalidKey) {
			t.Errorf("Open through a link out of the directory = %v, want a refusal", err)
		}
		if _, _, err := b.store.Put(ctx, "escape/secret", strings.NewReader("overwritten")); err == nil {
			t.Error("Put through a link out of the directory succeeded")
		}
		if err := b.store.Delete(ctx, "escape/secret"); err == nil {
			t.Error("Delete through a link out of the directory succeeded")
		}
		if got, _ := os.ReadFile(outside); string(got) != "secret" {
			t.Errorf("the file outside is now %q", got)
		}
	})
}
