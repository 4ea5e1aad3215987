package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/chomhq/chom/drivers"
)

var _ drivers.BackupStore = (*Store)(nil)

// Part sizes of a multipart upload. S3 refuses parts under 5 MiB (but the last)
// and over 5 GiB.
const (
	// DefaultPartSize is the part size when Config.PartSize is 0.
	DefaultPartSize = 16 << 20
	// MinPartSize is the smallest part size S3 accepts.
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part size S3 accepts.
	MaxPartSize = 5 << 30
)

// Config configures a Store.
type Config struct {
	// Endpoint is host[:port] of the S3 API, without a scheme
	// ("s3.eu-west-1.amazonaws.com", "127.0.0.1:9000").
	Endpoint string
	// Bucket holds the objects; it must exist (see EnsureBucket).
	Bucket string
	// AccessKey and SecretKey sign every request. Both are required.
	AccessKey string
	SecretKey string
	// Region of the bucket; empty asks the server (one extra request per bucket).
	Region string
	// UseTLS selects https (true) or http.
	UseTLS bool
	// Prefix is put before every key ("chom/" → "chom/ten_1/…"); empty for none.
	// It follows the key rules of drivers.ValidateBackupKey and ends with "/".
	Prefix string
	// PartSize is the size of each part of an upload and the memory one Put
	// holds; 0 means DefaultPartSize; MinPartSize to MaxPartSize.
	PartSize uint64
	// Transport replaces the HTTP transport (tests, proxies); nil for the
	// client's default.
	Transport http.RoundTripper
}

// withDefaults fills the zero fields that have one.
func (c Config) withDefaults() Config {
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	return c
}

// Validate reports every problem with c at once, or nil. Its messages never
// contain the secret key.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("endpoint is required"))
	} else if strings.Contains(c.Endpoint, "://") || strings.ContainsAny(c.Endpoint, "/?#@ ") {
		errs = append(errs, fmt.Errorf("endpoint %q must be host[:port], without scheme or path", c.Endpoint))
	} else if host, port, err := net.SplitHostPort(c.Endpoint); err == nil {
		if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("endpoint %q: bad host or port", c.Endpoint))
		}
	}
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		errs = append(errs, fmt.Errorf("bucket %q: %w", c.Bucket, err))
	}
	if c.AccessKey == "" {
		errs = append(errs, errors.New("access key is required"))
	}
	if c.SecretKey == "" {
		errs = append(errs, errors.New("secret key is required"))
	}
	if c.Prefix != "" {
		if !strings.HasSuffix(c.Prefix, "/") {
			errs = append(errs, fmt.Errorf("prefix %q must end with /", c.Prefix))
		} else if err := drivers.ValidateBackupKey(strings.TrimSuffix(c.Prefix, "/")); err != nil {
			errs = append(errs, fmt.Errorf("prefix: %w", err))
		}
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		errs = append(errs, fmt.Errorf("part size %d must be between %d (5 MiB) and %d (5 GiB)", c.PartSize, MinPartSize, MaxPartSize))
	}
	return errors.Join(errs...)
}

// String describes c without its secret key.
func (c Config) String() string {
	return fmt.Sprintf("s3store.Config{Endpoint:%q Bucket:%q Region:%q UseTLS:%t Prefix:%q PartSize:%d AccessKey:%q SecretKey:[redacted]}",
		c.Endpoint, c.Bucket, c.Region, c.UseTLS, c.Prefix, c.PartSize, c.AccessKey)
}

// LogValue is c for slog, without its secret key.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint), slog.String("bucket", c.Bucket),
		slog.String("region", c.Region), slog.Bool("tls", c.UseTLS),
		slog.String("prefix", c.Prefix), slog.Uint64("part_size", c.PartSize),
	)
}

// Store keeps each object as Prefix + key in one bucket. It is safe for
// concurrent use.
type Store struct {
	client   *minio.Client
	bucket   string
	prefix   string
	region   string
	partSize uint64
	secrets  []string // replaced in every error message
}

// New returns a Store for cfg, or an error naming every problem with cfg. It
// sends no request; the first Put, Open or Delete (or EnsureBucket) does.
func New(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3store: invalid config: %w", err)
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.UseTLS,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3store: client for %s: %w", cfg.Endpoint, err)
	}
	return &Store{
		client:   client,
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		region:   cfg.Region,
		partSize: cfg.PartSize,
		secrets:  []string{cfg.SecretKey, cfg.AccessKey},
	}, nil
}

func (s *Store) object(key string) string { return s.prefix + key }

// EnsureBucket creates the bucket when it does not exist (for `chom dev` and
// tests; production buckets are made with their lifecycle rules beforehand).
func (s *Store) EnsureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.fail("ensure bucket", "", err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return s.fail("ensure bucket", "", err)
	}
	return nil
}

// Put streams what r yields into a multipart upload under key and returns its
// size and hex SHA-256, both computed while reading. An error (from r, the
// server, or ctx ending) leaves the previous object, if any, under key.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (size int64, sha256Hex string, err error) {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return 0, "", fmt.Errorf("s3store: put: %w", err)
	}
	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, h)}
	info, err := s.client.PutObject(ctx, s.bucket, s.object(key), counted, -1, minio.PutObjectOptions{
		PartSize:    s.partSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return 0, "", s.fail("put", key, fmt.Errorf("after %d bytes: %w", counted.n, err))
	}
	if info.Size != counted.n {
		return 0, "", s.fail("put", key, fmt.Errorf("server stored %d bytes, %d were read", info.Size, counted.n))
	}
	return counted.n, hex.EncodeToString(h.Sum(nil)), nil
}

// Open returns the object under key, or an error wrapping drivers.ErrNotFound
// when there is none. It asks the server at once (the client's GetObject alone
// would only fail on the first read), so a missing object is an error here.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return nil, fmt.Errorf("s3store: open: %w", err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.object(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("open", key, err)
	}
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s.fail("open", key, err)
	}
	return &object{obj: obj, s: s, key: key}, nil
}

// Delete removes the object under key; a missing one is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := drivers.ValidateBackupKey(key); err != nil {
		return fmt.Errorf("s3store: delete: %w", err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.object(key), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.fail("delete", key, err)
	}
	return nil
}

// fail wraps err for op on key: a missing key wraps drivers.ErrNotFound, and the
// credentials never appear in the message.
func (s *Store) fail(op, key string, err error) error {
	what := "s3store: " + op + " " + s.bucket
	if key != "" {
		what += "/" + s.object(key)
	}
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return &redacted{msg: what + ": " + drivers.ErrNotFound.Error(), err: drivers.ErrNotFound, secrets: s.secrets}
	}
	return &redacted{msg: what + ": " + err.Error(), err: err, secrets: s.secrets}
}

// redacted is an error whose message has the secrets replaced. It unwraps to
// the original for errors.Is; the original's own message is not redacted, so
// callers log the redacted one (err.Error()), as they do.
type redacted struct {
	msg     string
	err     error
	secrets []string
}

func (e *redacted) Error() string {
	msg := e.msg
	for _, s := range e.secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

func (e *redacted) Unwrap() error { return e.err }

// object is an open object; read errors are wrapped like the Store's.
type object struct {
	obj *minio.Object
	s   *Store
	key string
}

func (o *object) Read(p []byte) (int, error) {
	n, err := o.obj.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = o.s.fail("read", o.key, err)
	}
	return n, err
}

func (o *object) Close() error { return o.obj.Close() }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
