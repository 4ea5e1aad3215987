package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress"
	"github.com/chomhq/chom/models"
	"github.com/chomhq/chom/queue"
)

// indexPage is the starter page the local driver writes for an html site.
func (s *stack) indexPage(domain string) string {
	return filepath.Join(s.root, s.vpsID, "sites", domain, "public", "index.html")
}

// archives lists the objects in the backup store.
func (s *stack) archives(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.backupDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *stack) backup(t *testing.T, token, id string) models.SiteBackup {
	t.Helper()
	r := s.do("GET", "/api/v1/backups/"+id, token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET backup %s: %d %s", id, r.status, r.body)
	}
	var b models.SiteBackup
	r.json(t, &b)
	return b
}

func accepted(t *testing.T, r response) ingress.OperationView {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", r.status, r.body)
	}
	if !strings.HasPrefix(r.header.Get("Location"), "/api/v1/operations/op_") || r.header.Get("Retry-After") == "" {
		t.Fatalf("202 without Location / Retry-After: %v", r.header)
	}
	var op ingress.OperationView
	r.json(t, &op)
	return op
}

// get fetches a URL of the API without a token.
func (s *stack) get(t *testing.T, path string) response {
	t.Helper()
	return s.do("GET", path, "", nil)
}

// Create a site, back it up, change a file, restore, see the original;
// download through the signed link (tampered and expired links are 403);
// delete the backup and see its archive gone.
func TestBackupRestoreDownloadDelete(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.needBackups()
		op := s.createSite(s.tokenA, "backup.example", "html")
		if done := s.waitOp(s.tokenA, op.ID); done.Status != models.OpSucceeded {
			t.Fatalf("provision %s", done.Status)
		}
		siteID := op.TargetID
		original, err := os.ReadFile(s.indexPage("backup.example"))
		if err != nil {
			t.Fatalf("starter page: %v", err)
		}

		// Bad input changes nothing.
		before := s.count("site_backups", "")
		assertProblem(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, `{"type":"everything"}`), http.StatusUnprocessableEntity, "type")
		assertProblem(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, `{"retention_days":0}`), http.StatusUnprocessableEntity, "retention_days")
		assertProblem(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, `{"type":"database"}`), http.StatusUnprocessableEntity, "type")
		assertProblem(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, `{"type":"full","extra":1}`), http.StatusUnprocessableEntity, "extra")
		if n := s.count("site_backups", ""); n != before {
			t.Fatalf("rejected requests wrote %d backups", n-before)
		}

		bop := accepted(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, map[string]any{"type": "files", "retention_days": 7},
			"Idempotency-Key", "backup-1"))
		again := accepted(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, map[string]any{"type": "files", "retention_days": 7},
			"Idempotency-Key", "backup-1"))
		if again.ID != bop.ID {
			t.Fatalf("same Idempotency-Key gave operation %s, then %s", bop.ID, again.ID)
		}
		if done := s.waitOp(s.tokenA, bop.ID); done.Status != models.OpSucceeded {
			t.Fatalf("backup %s: %+v", done.Status, done.Error)
		}
		bk := s.backup(t, s.tokenA, bop.TargetID)
		if bk.Status != models.BackupStatusCompleted || bk.SizeBytes <= 0 || len(bk.SHA256) != 64 || bk.ExpiresAt == nil {
			t.Fatalf("backup %+v", bk)
		}
		if objs := s.archives(t); len(objs) != 1 {
			t.Fatalf("archives %v, want one", objs)
		}
		var list ingress.Page[models.SiteBackup]
		s.do("GET", "/api/v1/sites/"+siteID+"/backups", s.tokenA, nil).json(t, &list)
		if len(list.Data) != 1 || list.Data[0].ID != bk.ID {
			t.Fatalf("listing %+v", list.Data)
		}

		// Change the site, restore, see the original.
		if err := os.WriteFile(s.indexPage("backup.example"), []byte("defaced"), 0o644); err != nil {
			t.Fatal(err)
		}
		rop := accepted(t, s.do("POST", "/api/v1/backups/"+bk.ID+"/restore", s.tokenA, nil))
		if done := s.waitOp(s.tokenA, rop.ID); done.Status != models.OpSucceeded {
			t.Fatalf("restore %s: %+v", done.Status, done.Error)
		}
		if got, _ := os.ReadFile(s.indexPage("backup.example")); !bytes.Equal(got, original) {
			t.Fatalf("page after restore %q, want %q", got, original)
		}

		// Download through the signed link: no token, the archive as stored.
		var link ingress.DownloadLink
		r := s.do("GET", "/api/v1/backups/"+bk.ID+"/download", s.tokenA, nil)
		if r.status != http.StatusOK {
			t.Fatalf("download link: %d %s", r.status, r.body)
		}
		r.json(t, &link)
		if until := time.Until(link.ExpiresAt); until <= 0 || until > 5*time.Minute+time.Second {
			t.Fatalf("link expires in %s", until)
		}
		// The link is absolute and on this server (this stack sets no public
		// URL); TestDownloadLinkWorksAsGiven fetches it as is.
		linkPath, ok := strings.CutPrefix(link.URL, s.url+"/")
		if !ok {
			t.Fatalf("link %q is not on %s", link.URL, s.url)
		}
		linkPath = "/" + linkPath
		r = s.get(t, linkPath)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/gzip" ||
			r.header.Get("Content-Length") != strconv.FormatInt(bk.SizeBytes, 10) ||
			!strings.Contains(r.header.Get("Content-Disposition"), bk.ID+".tar.gz") {
			t.Fatalf("archive: %d %v", r.status, r.header)
		}
		if sum := sha256.Sum256(r.body); hex.EncodeToString(sum[:]) != bk.SHA256 {
			t.Fatal("downloaded archive does not match the recorded SHA-256")
		}
		if !archiveHas(t, r.body, "files/", original) {
			t.Fatal("the archive does not hold the starter page under files/")
		}
		// Tampered signature, another backup's path, an expired (but correctly
		// signed) link: all 403.
		tampered := linkPath[:len(linkPath)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", linkPath[len(linkPath)-1])+1)%16])
		assertProblem(t, s.get(t, tampered), http.StatusForbidden, "")
		other := strings.Replace(linkPath, bk.ID, models.NewID(models.PrefixBackup), 1)
		assertProblem(t, s.get(t, other), http.StatusForbidden, "")
		past := time.Now().Add(-time.Second).Unix()
		assertProblem(t, s.get(t, s.signedURL(bk.ID, past)), http.StatusForbidden, "")
		// The documented scheme: HMAC-SHA256(key, "<id>\n<expires>").
		if r := s.get(t, s.signedURL(bk.ID, time.Now().Add(time.Minute).Unix())); r.status != http.StatusOK {
			t.Fatalf("a link signed as documented: %d", r.status)
		}
		// A valid link to a backup that does not exist is 404.
		ghost := models.NewID(models.PrefixBackup)
		assertProblem(t, s.get(t, s.signedURL(ghost, time.Now().Add(time.Minute).Unix())), http.StatusNotFound, "")

		// Delete: the archive goes, the backup reads deleted, the link 404s.
		dop := accepted(t, s.do("DELETE", "/api/v1/backups/"+bk.ID, s.tokenA, nil))
		if done := s.waitOp(s.tokenA, dop.ID); done.Status != models.OpSucceeded {
			t.Fatalf("delete %s", done.Status)
		}
		if objs := s.archives(t); len(objs) != 0 {
			t.Fatalf("archives after delete: %v", objs)
		}
		if got := s.backup(t, s.tokenA, bk.ID); got.Status != models.BackupStatusDeleted {
			t.Fatalf("status after delete %s", got.Status)
		}
		assertProblem(t, s.get(t, s.signedURL(bk.ID, time.Now().Add(time.Minute).Unix())), http.StatusNotFound, "")
		assertProblem(t, s.do("DELETE", "/api/v1/backups/"+bk.ID, s.tokenA, nil), http.StatusNotFound, "")
		for _, typ := range []string{"backup.completed.v1", "backup.restored.v1", "backup.deleted.v1"} {
			if n := s.count("outbox_events", "event_type = ? AND subject = ?", typ, bk.ID); n != 1 {
				t.Errorf("%d %s events, want 1", n, typ)
			}
		}
	})
}

// signedURL signs a link to backup id until expires as the API documents it.
func (s *stack) signedURL(id string, expires int64) string {
	m := hmac.New(sha256.New, s.signingKey)
	m.Write([]byte(id + "\n" + strconv.FormatInt(expires, 10)))
	return "/api/v1/backups/" + id + "/archive?expires=" + strconv.FormatInt(expires, 10) + "&sig=" + hex.EncodeToString(m.Sum(nil))
}

// archiveHas reports whether the tar+gzip archive holds a file under prefix
// with content want.
func archiveHas(t *testing.T, archive []byte, prefix string, want []byte) bool {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("archive is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			t.Fatalf("archive is not tar: %v", err)
		}
		if !strings.HasPrefix(h.Name, prefix) || h.Typeflag != tar.TypeReg {
			continue
		}
		b, _ := io.ReadAll(tr)
		if bytes.Equal(b, want) {
			return true
		}
	}
}

// runTask runs one delivery of an operation's task with handler h.
func runTask(t *testing.T, h asynq.Handler, typ string, op ingress.OperationView, tenantID string) error {
	t.Helper()
	p, _ := json.Marshal(queue.OperationPayload{OperationID: op.ID, TenantID: tenantID})
	return h.ProcessTask(context.Background(), asynq.NewTask(typ, p))
}

// One mutation at a time per site: while a backup is pending, a second backup,
// a restore and a delete of the site answer 409 naming it; so does a backup of
// a site whose provision is still pending.
func TestBackupConflictsWithRunningMutation(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		s.needBackups()
		prov := s.createSite(s.tokenA, "busy.example", "html")
		siteID := prov.TargetID
		p := assertProblem(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, nil), http.StatusConflict, "")
		if p.OperationID != prov.ID {
			t.Fatalf("409 names %q, want the provision %s", p.OperationID, prov.ID)
		}
		if err := runTask(t, s.provision, queue.TypeSiteProvision, prov, s.tenantA); err != nil {
			t.Fatal(err)
		}
		first := accepted(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, nil))
		for _, req := range []struct{ method, path string }{
			{"POST", "/api/v1/sites/" + siteID + "/backups"},
			{"DELETE", "/api/v1/sites/" + siteID},
		} {
			p := assertProblem(t, s.do(req.method, req.path, s.tokenA, nil), http.StatusConflict, "")
			if p.OperationID != first.ID {
				t.Fatalf("%s %s: 409 names %q, want %s", req.method, req.path, p.OperationID, first.ID)
			}
		}
		s.startWorker()
		if done := s.waitOp(s.tokenA, first.ID); done.Status != models.OpSucceeded {
			t.Fatalf("backup %s: %+v", done.Status, done.Error)
		}
		// Now idle: a restore is accepted, and while it is pending a backup is 409.
		rop := accepted(t, s.do("POST", "/api/v1/backups/"+first.TargetID+"/restore", s.tokenA, nil))
		if r := s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, nil); r.status == http.StatusConflict {
			if p := assertProblem(t, r, http.StatusConflict, ""); p.OperationID != rop.ID {
				t.Fatalf("409 names %q, want the restore %s", p.OperationID, rop.ID)
			}
		} else if r.status != http.StatusAccepted {
			t.Fatalf("backup after restore: %d %s", r.status, r.body) // the restore had already finished
		}
		s.waitOp(s.tokenA, rop.ID)
	})
}

// Schedules book one backup per due time however often the sweep runs; prune
// deletes expired backups and those beyond keep.
func TestBackupSchedulesAndPrune(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{})
		s.needBackups()
		op := s.createSite(s.tokenA, "sched.example", "html")
		s.waitOp(s.tokenA, op.ID)
		siteID := op.TargetID
		path := "/api/v1/sites/" + siteID + "/backup-schedule"
		assertProblem(t, s.do("GET", path, s.tokenA, nil), http.StatusNotFound, "")
		assertProblem(t, s.do("PUT", path, s.tokenA, `{"frequency":"hourly","keep":3}`), http.StatusUnprocessableEntity, "frequency")
		assertProblem(t, s.do("PUT", path, s.tokenA, `{"frequency":"daily","keep":0}`), http.StatusUnprocessableEntity, "keep")
		r := s.do("PUT", path, s.tokenA, `{"frequency":"daily","keep":1,"type":"files"}`)
		if r.status != http.StatusOK {
			t.Fatalf("PUT schedule: %d %s", r.status, r.body)
		}
		var sc models.BackupSchedule
		r.json(t, &sc)
		if sc.Frequency != "daily" || sc.Keep != 1 || sc.BackupType != "files" {
			t.Fatalf("schedule %+v", sc)
		}
		if r := s.do("GET", path, s.tokenA, nil); r.status != http.StatusOK {
			t.Fatalf("GET schedule: %d", r.status)
		}
		for range 3 {
			if err := s.backups.Schedules.ProcessTask(context.Background(), asynq.NewTask(queue.TypeBackupSchedules, nil)); err != nil {
				t.Fatal(err)
			}
		}
		if n := s.count("operations", "op_type = ?", models.OpTypeBackupCreate); n != 1 {
			t.Fatalf("%d scheduled backups for one due time, want 1", n)
		}
		var ops ingress.Page[ingress.OperationView]
		s.do("GET", "/api/v1/operations?type=backup.create", s.tokenA, nil).json(t, &ops)
		if len(ops.Data) != 1 {
			t.Fatalf("operations %+v", ops.Data)
		}
		if done := s.waitOp(s.tokenA, ops.Data[0].ID); done.Status != models.OpSucceeded {
			t.Fatalf("scheduled backup %s", done.Status)
		}
		scheduled := ops.Data[0].TargetID

		// An asked-for backup, then make it expired: prune deletes it, not the
		// scheduled one (keep 1, and it is the newest of its schedule).
		bop := accepted(t, s.do("POST", "/api/v1/sites/"+siteID+"/backups", s.tokenA, map[string]any{"retention_days": 1}))
		s.waitOp(s.tokenA, bop.ID)
		if _, err := s.db.NewUpdate().Table("site_backups").Set("expires_at = ?", time.Now().Add(-time.Minute).UTC()).
			Where("id = ?", bop.TargetID).Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(s.archives(t)); n != 2 {
			t.Fatalf("%d archives, want 2", n)
		}
		for range 2 {
			if err := s.backups.Prune.ProcessTask(context.Background(), asynq.NewTask(queue.TypeBackupPrune, nil)); err != nil {
				t.Fatal(err)
			}
		}
		if n := s.count("operations", "op_type = ?", models.OpTypeBackupDelete); n != 1 {
			t.Fatalf("%d prune deletes, want 1", n)
		}
		deadline := time.Now().Add(20 * time.Second)
		for s.backup(t, s.tokenA, bop.TargetID).Status != models.BackupStatusDeleted {
			if time.Now().After(deadline) {
				t.Fatal("the expired backup was not deleted")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := s.backup(t, s.tokenA, scheduled); got.Status != models.BackupStatusCompleted {
			t.Fatalf("scheduled backup %s", got.Status)
		}
		if n := len(s.archives(t)); n != 1 {
			t.Fatalf("%d archives after prune, want 1", n)
		}
		if r := s.do("DELETE", path, s.tokenA, nil); r.status != http.StatusNoContent {
			t.Fatalf("DELETE schedule: %d %s", r.status, r.body)
		}
		assertProblem(t, s.do("GET", path, s.tokenA, nil), http.StatusNotFound, "")
	})
}
