package ssh

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/chomhq/chom/drivers"
)

// Names in a backup archive (scriptArchive).
const (
	archiveFilesDir = drivers.ArchiveFilesDir
	archiveDatabase = drivers.ArchiveDatabase
)

// checkArchive reads a whole tar+gzip backup archive and refuses (an error
// wrapping drivers.ErrCorruptArchive) what the local driver's Restore refuses
// (drivers/local/backup.go, whose rules these mirror): a name that is
// absolute, holds "..", "." or an empty segment, a backslash or NUL, or lies
// outside files/ (but for database.sql); a files member that is not a
// directory (files/ itself a link); an entry type other than directory,
// regular file and symbolic link (no hard link, device or fifo); a symbolic
// link whose target is absolute or leaves the document root; and an entry in
// or replacing a link an earlier entry made. GNU tar on the server would
// create all of these as they come, and root's later chown -R and nginx then
// act on them, so Restore checks the stream before the server extracts it.
func checkArchive(r io.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: gzip: %w", drivers.ErrCorruptArchive, err)
	}
	tr := tar.NewReader(gz)
	links := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: tar: %w", drivers.ErrCorruptArchive, err)
		}
		if hdr.Name == archiveDatabase && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
			continue
		}
		rel, err := drivers.ArchiveEntryName(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "." {
			if hdr.Typeflag != tar.TypeDir {
				return fmt.Errorf("%w: entry %q is not a directory", drivers.ErrCorruptArchive, hdr.Name)
			}
			continue
		}
		for p := rel; p != "."; p = path.Dir(p) {
			if links[p] {
				return fmt.Errorf("%w: entry %q lies in or replaces the symbolic link %q", drivers.ErrCorruptArchive, hdr.Name, archiveFilesDir+p)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeRegA:
		case tar.TypeSymlink:
			if !drivers.LinkStaysInside(rel, hdr.Linkname) {
				return fmt.Errorf("%w: entry %q links to %q, outside the document root", drivers.ErrCorruptArchive, hdr.Name, hdr.Linkname)
			}
			links[rel] = true
		default:
			return fmt.Errorf("%w: entry %q has type %q (only directories, regular files and symbolic links are restored)", drivers.ErrCorruptArchive, hdr.Name, hdr.Typeflag)
		}
	}
}
