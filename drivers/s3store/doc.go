// Package s3store is a drivers.BackupStore on an S3-compatible object store
// (AWS S3, MinIO, Ceph RGW, Garage, Wasabi, …), through
// github.com/minio/minio-go/v7: a small, well-kept S3 client (Apache-2.0) that
// streams multipart uploads of unknown size, which a backup piped from a server
// always is.
//
// Put streams: the archive is read once, through a SHA-256 and a byte counter,
// into a multipart upload of PartSize parts, so the store holds one part
// (default 16 MiB) in memory, whatever the object's size; at 10,000 parts the
// largest object is 10,000 × PartSize (156 GiB at the default). S3 makes a
// multipart object visible only when the upload completes, so a failed Put
// leaves the previous object (or none) under the key; the client aborts the
// failed upload. When that abort cannot be sent (the context has ended, the
// network is gone) the parts stay invisible but billed until the bucket's
// lifecycle rule AbortIncompleteMultipartUpload removes them: set one.
//
// Objects are named Prefix + key. The secret key is held only by the client's
// signer: Config's String and LogValue redact it, and every error this package
// returns has it (and the access key) replaced by "[redacted]".
package s3store
