package ingress

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chomhq/chom/ingress/input"
	"github.com/chomhq/chom/models"
)

// BackupArchives opens stored backup archives for download (a
// drivers.BackupStore does).
type BackupArchives interface {
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// BackupConfig configures the backup routes.
type BackupConfig struct {
	// Archives is where GET /backups/{id}/archive reads from. Optional: without
	// it that route answers 503 (the download link is still signed).
	Archives BackupArchives
	// IsNotFound reports whether an Open error means the object is missing
	// (404 rather than 500); e.g. errors.Is(err, drivers.ErrNotFound).
	IsNotFound func(error) bool
	// SigningKey signs download links (HMAC-SHA256). Optional: empty means a
	// random key per process, so links only work on the process that signed
	// them; cmd/chom requires one outside `chom dev`.
	SigningKey []byte
	// LinkTTL is how long a download link works. Default 5m.
	LinkTTL time.Duration
	// DefaultRetentionDays is the retention of a backup whose request omits
	// retention_days. Default 30.
	DefaultRetentionDays int
}

// backupRoutes is the state of the backup routes.
type backupRoutes struct {
	cfg BackupConfig
}

func newBackupRoutes(cfg BackupConfig) (*backupRoutes, error) {
	if len(cfg.SigningKey) == 0 {
		cfg.SigningKey = make([]byte, 32)
		if _, err := rand.Read(cfg.SigningKey); err != nil {
			return nil, err
		}
	}
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = 5 * time.Minute
	}
	if cfg.DefaultRetentionDays <= 0 {
		cfg.DefaultRetentionDays = 30
	}
	if cfg.IsNotFound == nil {
		cfg.IsNotFound = func(error) bool { return false }
	}
	return &backupRoutes{cfg: cfg}, nil
}

// sign is the hex HMAC-SHA256 of "<backup id>\n<expiry unix seconds>".
func (b *backupRoutes) sign(backupID string, expires int64) string {
	m := hmac.New(sha256.New, b.cfg.SigningKey)
	m.Write([]byte(backupID + "\n" + strconv.FormatInt(expires, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// verify reports whether sig is the signature of backupID until expires and
// expires is still ahead of now; the comparison is constant-time.
func (b *backupRoutes) verify(backupID, expires, sig string, now time.Time) bool {
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil || exp <= now.Unix() {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	want, _ := hex.DecodeString(b.sign(backupID, exp))
	return hmac.Equal(got, want)
}

// errBadLink is a download link with a bad or expired signature.
var errBadLink = errors.New("the download link is invalid or has expired")

func (a *API) createBackup(c *gin.Context) {
	siteID, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	// Another tenant's site is a 404 whatever the body says.
	site, err := a.store.GetSite(c.Request.Context(), principal(c).TenantID, siteID)
	if err != nil {
		a.fail(c, err)
		return
	}
	var (
		raw       input.CreateBackupRequest
		decodeErr error
	)
	if c.Request.ContentLength != 0 {
		decodeErr = input.DecodeJSON(c.Request, &raw)
	}
	req, err := raw.Normalize(a.backups.cfg.DefaultRetentionDays)
	if err := input.Join(decodeErr, err, backupTypeFits(site, raw.Type)); err != nil {
		a.fail(c, err)
		return
	}
	acc, err := a.accept(c, map[string]any{"site_id": siteID, "request": req})
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx, cancel := mutationContext(c)
	defer cancel()
	res, err := a.store.CreateBackup(ctx, models.CreateBackupParams{Accept: acc, SiteID: siteID,
		BackupType: req.Type, RetentionDays: *req.RetentionDays})
	if err != nil {
		a.fail(c, err)
		return
	}
	a.enqueue(c, res.Operation)
	writeAccepted(c, res.Operation)
}

func (a *API) listBackups(c *gin.Context) {
	siteID, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	var v input.ValidationError
	cursor, limit := pageParams(c, models.PrefixBackup, &v)
	status := c.Query("status")
	oneOf(&v, "status", status, models.BackupStatusPending, models.BackupStatusRunning, models.BackupStatusCompleted,
		models.BackupStatusFailed, models.BackupStatusDeleting, models.BackupStatusDeleted)
	if err := v.Err(); err != nil {
		a.fail(c, err)
		return
	}
	list, err := a.store.ListBackups(c.Request.Context(), principal(c).TenantID, siteID,
		models.BackupFilter{Status: status, Cursor: cursor, Limit: limit})
	if err != nil {
		a.fail(c, err)
		return
	}
	page := Page[models.SiteBackup]{Data: list}
	if page.Data == nil {
		page.Data = []models.SiteBackup{}
	}
	if len(list) == limit {
		page.NextCursor = list[len(list)-1].ID
	}
	c.JSON(http.StatusOK, page)
}

func (a *API) getBackup(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixBackup)
	if !ok {
		return
	}
	b, err := a.store.GetBackup(c.Request.Context(), principal(c).TenantID, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, b)
}

func (a *API) restoreBackup(c *gin.Context) {
	a.mutateByID(c, models.PrefixBackup, "backup_id", a.store.RestoreBackup)
}

func (a *API) deleteBackup(c *gin.Context) {
	a.mutateByID(c, models.PrefixBackup, "backup_id", a.store.DeleteBackup)
}

// DownloadLink is the answer of GET /backups/{id}/download.
type DownloadLink struct {
	// URL is absolute (see Config.PublicURL): GET it as given, without a
	// token, before ExpiresAt.
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *API) backupDownload(c *gin.Context) {
	id, ok := a.pathID(c, models.PrefixBackup)
	if !ok {
		return
	}
	b, err := a.store.GetBackup(c.Request.Context(), principal(c).TenantID, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	if b.Status != models.BackupStatusCompleted {
		a.fail(c, &models.ConflictError{Reason: "the backup is " + b.Status + "; only completed backups can be downloaded",
			OperationID: deref(b.OperationID)})
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, a.downloadLink(c.Request, b.ID))
}

// downloadLink is the signed, absolute link to backup id's archive for the
// client of r, valid for BackupConfig.LinkTTL.
func (a *API) downloadLink(r *http.Request, id string) DownloadLink {
	exp := a.now().Add(a.backups.cfg.LinkTTL).Truncate(time.Second)
	link := a.baseURL(r) + "/api/v1/backups/" + id + "/archive?expires=" + strconv.FormatInt(exp.Unix(), 10) +
		"&sig=" + a.backups.sign(id, exp.Unix())
	return DownloadLink{URL: link, ExpiresAt: exp.UTC()}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// backupArchive streams a completed backup's archive to the holder of a valid
// signed link; no bearer token is needed (the link is the credential).
func (a *API) backupArchive(c *gin.Context) {
	id := c.Param("id")
	if !a.backups.verify(id, c.Query("expires"), c.Query("sig"), a.now()) {
		writeProblem(c, Problem{Type: problemForbidden, Title: "Forbidden", Status: http.StatusForbidden, Detail: errBadLink.Error()})
		return
	}
	b, err := a.store.BackupByID(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err)
		return
	}
	if b.Status != models.BackupStatusCompleted {
		a.fail(c, models.ErrNotFound)
		return
	}
	if a.backups.cfg.Archives == nil {
		writeProblem(c, Problem{Type: problemUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
			Detail: "backup storage is not configured on this server"})
		return
	}
	rc, err := a.backups.cfg.Archives.Open(c.Request.Context(), b.StorageKey)
	if err != nil {
		if a.backups.cfg.IsNotFound(err) {
			a.fail(c, models.ErrNotFound)
			return
		}
		a.fail(c, err)
		return
	}
	defer rc.Close()
	// An archive takes as long as it is big: lift the server's write timeout
	// for this response (the link's expiry bounds who may start one).
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
	c.Header("Content-Type", "application/gzip")
	c.Header("Content-Length", strconv.FormatInt(b.SizeBytes, 10))
	c.Header("Content-Disposition", `attachment; filename="`+b.ID+`.tar.gz"`)
	c.Header("Cache-Control", "no-store")
	c.Header("X-Checksum-SHA256", b.SHA256)
	c.Status(http.StatusOK)
	if _, err := io.Copy(c.Writer, rc); err != nil {
		a.log.WarnContext(c.Request.Context(), "backup download cut short", "request_id", c.GetString(ctxRequestID),
			"backup_id", b.ID, "error", err)
	}
}

func (a *API) putBackupSchedule(c *gin.Context) {
	siteID, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	p := principal(c)
	site, err := a.store.GetSite(c.Request.Context(), p.TenantID, siteID)
	if err != nil {
		a.fail(c, err)
		return
	}
	var raw input.BackupScheduleRequest
	decodeErr := input.DecodeJSON(c.Request, &raw)
	req, err := raw.Normalize()
	if err := input.Join(decodeErr, err, backupTypeFits(site, raw.Type)); err != nil {
		a.fail(c, err)
		return
	}
	sc, created, err := a.store.PutBackupSchedule(c.Request.Context(), models.PutBackupScheduleParams{TenantID: p.TenantID,
		SiteID: siteID, Frequency: req.Frequency, Keep: req.Keep, BackupType: req.Type})
	if err != nil {
		a.fail(c, err)
		return
	}
	if created {
		sc = a.bookFirstBackup(c, sc)
	}
	c.JSON(http.StatusOK, sc)
}

// bookFirstBackup books the first backup of a schedule just created, which is
// due at once, and enqueues it, so it starts within seconds rather than at the
// next backup:schedules sweep (CHOM_BACKUP_SCHEDULE_INTERVAL, 15 minutes by
// default). It returns the schedule as it now stands (its next_run_at moved one
// period on when the backup was booked).
//
// Decision: the booking is the sweep's own, models.Store.BookScheduledBackup,
// run by the request right after the schedule's transaction commits, rather
// than a sweep task enqueued from here. So the invariants hold as for any
// mutation: one backup.create operation and one task whose ID is the
// operation's, booked once per due time (the booking only moves next_run_at if
// it still holds the time it read, so a sweep running at the same moment books
// nothing twice), and nothing lost: if Redis is down the operation stays
// pending and the reconciler enqueues it; if this process dies between the two
// transactions, or the site is busy or not active now, the schedule stays due
// and the next sweep books it. None of that fails the PUT, whose subject is
// the schedule; the backup shows in GET /sites/{id}/backups and its operation
// in GET /operations.
func (a *API) bookFirstBackup(c *gin.Context, sc *models.BackupSchedule) *models.BackupSchedule {
	ctx, cancel := mutationContext(c)
	defer cancel()
	log := a.log.With("request_id", c.GetString(ctxRequestID), "site_id", sc.SiteID, "schedule_id", sc.ID)
	op, err := a.store.BookScheduledBackup(ctx, *sc)
	var conflict *models.ConflictError
	switch {
	case errors.As(err, &conflict):
		log.InfoContext(ctx, "first scheduled backup postponed to the next sweep", "reason", conflict.Reason)
		return sc
	case err != nil:
		log.WarnContext(ctx, "booking the first scheduled backup failed; the next sweep books it", "error", err)
		return sc
	case op == nil:
		return sc // a sweep booked it first
	}
	a.enqueue(c, op)
	if cur, err := a.store.GetBackupSchedule(ctx, sc.TenantID, sc.SiteID); err == nil {
		return cur
	}
	return sc
}

func (a *API) getBackupSchedule(c *gin.Context) {
	siteID, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	sc, err := a.store.GetBackupSchedule(c.Request.Context(), principal(c).TenantID, siteID)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, sc)
}

func (a *API) deleteBackupSchedule(c *gin.Context) {
	siteID, ok := a.pathID(c, models.PrefixSite)
	if !ok {
		return
	}
	if err := a.store.DeleteBackupSchedule(c.Request.Context(), principal(c).TenantID, siteID); err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// backupTypeFits refuses a database backup (or schedule) of a site type that
// has no database, naming the type field.
func backupTypeFits(site *models.Site, backupType string) error {
	if backupType == "database" && !models.SiteHasDatabase(site.SiteType) {
		v := &input.ValidationError{}
		v.Add("type", "a "+site.SiteType+" site has no database; use full or files")
		return v
	}
	return nil
}
