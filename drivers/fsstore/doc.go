// Package fsstore is a drivers.BackupStore on a local filesystem: one file per
// key under a directory, for `chom dev`, single-machine installs, or a mounted
// network filesystem shared by the workers.
//
// Put streams: it copies the reader into a temporary file beside the final one
// (hashing and counting as it copies, never holding the object in memory),
// fsyncs it, renames it over the key and fsyncs the directory. A failed Put
// removes its temporary file, so readers see the old object or the new one,
// never a partial one; concurrent Puts of one key leave one of them whole.
//
// Every path is resolved through an os.Root opened on the directory, so no key
// and no symbolic link planted in the directory can reach a file outside it.
// Keys are checked by drivers.ValidateBackupKey first; temporary files start
// with ".put-", a name no valid key segment can have.
package fsstore
