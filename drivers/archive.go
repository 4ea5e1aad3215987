package drivers

import (
	"fmt"
	"path"
	"strings"
)

// Names inside a backup archive (ArchiveFormat): the document root's tree
// under ArchiveFilesDir and the database dump as ArchiveDatabase. Both
// drivers write and read these names.
const (
	ArchiveFilesDir = "files/"
	ArchiveDatabase = "database.sql"
)

// ArchiveEntryName returns the path under "files/" an archive entry's name
// stands for ("." for "files/" itself), or an error wrapping
// ErrCorruptArchive for a name a restore must refuse: absolute, with a
// backslash or NUL, outside "files/", or with "..", "." or empty segments.
// The local driver's restore and the SSH driver's archive check share it, so
// both refuse the same names.
func ArchiveEntryName(name string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("%w: entry %q: %s", ErrCorruptArchive, name, why)
	}
	switch {
	case strings.HasPrefix(name, "/"):
		return refuse("absolute path")
	case strings.Contains(name, "\\") || strings.ContainsRune(name, 0):
		return refuse("backslash or NUL in the name")
	case !strings.HasPrefix(name, ArchiveFilesDir) && name+"/" != ArchiveFilesDir:
		return refuse(`outside "files/"`)
	}
	rel := strings.TrimSuffix(strings.TrimPrefix(name, ArchiveFilesDir), "/")
	if rel == "" {
		return ".", nil
	}
	for _, seg := range strings.Split(rel, "/") {
		switch seg {
		case "..":
			return refuse(`".." in the path`)
		case "", ".":
			return refuse("empty or '.' path segment")
		}
	}
	return rel, nil
}

// LinkStaysInside reports whether a symbolic link at rel (slash-separated,
// relative to the tree's root, in a directory that is no link itself) with
// target link resolves inside the tree. Judging by names alone is exact only
// for targets that climb first and then only descend ("../../img/logo.png",
// "current", not "a/../.." or "/x"), because a ".." after a name that is
// itself a link climbs from where that link points, not from the name; any
// other target is refused. Both drivers' restores apply it.
func LinkStaysInside(rel, link string) bool {
	if link == "" || path.IsAbs(link) || strings.ContainsAny(link, "\\\x00") || path.Clean(link) != link {
		return false
	}
	climbing := true
	for _, seg := range strings.Split(link, "/") {
		switch {
		case seg == ".." && !climbing:
			return false
		case seg != "..":
			climbing = false
		}
	}
	target := path.Join(path.Dir(rel), link)
	return target != ".." && !strings.HasPrefix(target, "../")
}
