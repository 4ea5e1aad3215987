package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/chomhq/chom/drivers"
)

// backupParts says what an archive of kind holds for site: its files, its
// database dump, or both. A database backup of a site without a database is
// an error wrapping drivers.ErrInvalidSpec.
func backupParts(site drivers.SiteSpec, kind string) (files, db bool, err error) {
	switch kind {
	case drivers.BackupFull:
		return true, site.HasDatabase(), nil
	case drivers.BackupFiles:
		return true, false, nil
	case drivers.BackupDatabase:
		if !site.HasDatabase() {
			return false, false, fmt.Errorf("%w: site type %s has no database to back up", drivers.ErrInvalidSpec, site.SiteType)
		}
		return false, true, nil
	default:
		return false, false, fmt.Errorf("%w: backup kind %q: want full, files or database", drivers.ErrInvalidSpec, kind)
	}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Archive streams an ArchiveFormat archive of site straight from the server
// to w: the remote `tar -cz` writes the document root as files/ and, for
// database kinds of sites with one, `mysqldump --single-transaction` as
// database.sql (dumped into the site's root-only state directory on the
// server first, removed afterwards). Nothing is buffered in memory. It runs
// for as long as ctx allows; a failing w ends the remote command. The host
// key must match site.Server.HostKey when that is set.
func (p *Provisioner) Archive(ctx context.Context, site drivers.SiteSpec, kind string, w io.Writer) error {
	sp, s, err := p.start(site)
	if err != nil {
		return fmt.Errorf("ssh: archive: %w", err)
	}
	files, db, err := backupParts(site, kind)
	if err != nil {
		return fmt.Errorf("ssh: archive %s: %w", site.Domain, err)
	}
	args := append([]string{sp.siteRoot, sp.stateDir, flag(files), flag(db), sp.db}, p.layout.MySQLDump...)
	if _, _, err := p.r.run(ctx, s.ep, scriptArchive, args, runOpts{stdout: w}); err != nil {
		return fmt.Errorf("ssh: archive %s (%s): %w", site.Domain, kind, err)
	}
	return nil
}

// Exit statuses of scriptRestore for an archive that cannot be restored: it
// lacks what its kind needs, or its database dump does not import.
const (
	exitNoContent = 4
	exitNoImport  = 5
)

// Restore puts back what an archive of kind holds. It first streams r to a
// staging file on the server (<StateDir>/<site>/restore, root-only); only when
// r ended with a clean io.EOF does a second command extract it beside the
// document root, import database.sql (for database kinds) and swap the new
// document root into place by rename. A reader that fails, as VerifyReader
// does on a checksum mismatch, therefore changes nothing on the live site;
// the staging is removed either way. For database kinds the dump is first
// imported into a scratch database, and the live one is emptied and loaded
// only once that worked, so it ends up holding exactly the backup's tables. An
// archive without what kind needs, or whose dump does not import, is an error
// wrapping drivers.ErrCorruptArchive (permanent) and changes nothing; so is
// one checkArchive refuses as it streams (a symbolic link that is absolute or
// leaves the site, a files member that is a link, an entry through a link, a
// hard link or device, a name outside files/), which the server never
// extracts.
func (p *Provisioner) Restore(ctx context.Context, site drivers.SiteSpec, kind string, r io.Reader) error {
	sp, s, err := p.start(site)
	if err != nil {
		return fmt.Errorf("ssh: restore: %w", err)
	}
	files, db, err := backupParts(site, kind)
	if err != nil {
		return fmt.Errorf("ssh: restore %s: %w", site.Domain, err)
	}
	in := &eofReader{r: r}
	// The archive is checked as it streams to the server (checkArchive), and
	// the server extracts it only if the check passed.
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() {
		err := checkArchive(pr)
		_, _ = io.Copy(io.Discard, pr) // keep the stream flowing after a verdict
		checked <- err
	}()
	_, _, err = p.r.run(ctx, s.ep, scriptReceive, []string{sp.stage}, runOpts{stdin: io.TeeReader(in, pw)})
	if err == nil && !in.eof {
		err = fmt.Errorf("archive stream did not reach EOF")
	}
	pw.CloseWithError(err)
	if cerr := <-checked; err == nil && cerr != nil {
		p.cleanStage(ctx, s, sp)
		// A restore killed mid-swap earlier is still repaired, as
		// scriptRestore would have done first.
		if _, _, rerr := p.r.run(ctx, s.ep, scriptRepairRestore, []string{sp.siteRoot}, runOpts{}); rerr != nil {
			cerr = errors.Join(cerr, fmt.Errorf("repair an interrupted restore: %w", rerr))
		}
		return fmt.Errorf("ssh: restore %s (%s): %w", site.Domain, kind, cerr)
	}
	if err != nil {
		p.cleanStage(ctx, s, sp)
		return fmt.Errorf("ssh: restore %s (%s): receive archive: %w", site.Domain, kind, err)
	}
	args := append([]string{sp.stage, sp.siteRoot, sp.user, p.layout.WebGroup, flag(files), flag(db), sp.db}, p.layout.MySQL...)
	if _, _, err := p.r.run(ctx, s.ep, scriptRestore, args, runOpts{}); err != nil {
		p.cleanStage(ctx, s, sp)
		var ce *commandError
		if errors.As(err, &ce) && (ce.exit.ExitStatus() == exitNoContent || ce.exit.ExitStatus() == exitNoImport) {
			err = fmt.Errorf("%w: %w", drivers.ErrCorruptArchive, err)
		}
		return fmt.Errorf("ssh: restore %s (%s): %w", site.Domain, kind, err)
	}
	return nil
}

// cleanStage removes a restore's staging, best effort: the next restore
// starts by removing it anyway.
func (p *Provisioner) cleanStage(ctx context.Context, s *session, sp sitePaths) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DialTimeout+10*time.Second)
	defer cancel()
	if _, _, err := p.r.run(ctx, s.ep, scriptRemoveStage, []string{sp.stage, sp.siteRoot + "/.chom-restore"}, runOpts{}); err != nil {
		p.cfg.Logger.WarnContext(ctx, "could not remove restore staging", "vps_id", s.ep.key, "error", err)
	}
}
