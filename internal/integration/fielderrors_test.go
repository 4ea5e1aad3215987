package integration

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/chomhq/chom/ingress/input"
)

// A body with an unknown field, a duplicate key, a mistyped field and an
// invalid value gets ONE 422 problem naming all four, on every route that
// takes a JSON body, and nothing is written.
func TestEveryBadFieldNamedAtOnce(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		site := s.createSite(s.tokenA, "fields.example", "php")
		before := s.snapshot()
		backupsBefore := s.count("site_backups", "")
		schedulesBefore := s.count("backup_schedules", "")

		cases := []struct {
			name, method, path, token, body string
			want                            []input.FieldError
		}{
			{
				name: "create site", method: "POST", path: "/api/v1/sites", token: s.tokenA,
				body: `{"domain":"a.example","domain":"b.example","site_type":"rails","php_version":8.3,"owner":"x"}`,
				want: []input.FieldError{
					{Field: "domain", Detail: "is given more than once"},
					{Field: "php_version", Detail: "must be a string"},
					{Field: "owner", Detail: "is not a known field"},
					{Field: "site_type", Detail: "must be one of wordpress, laravel, php, html"},
				},
			},
			{
				name: "register vps", method: "POST", path: "/api/v1/vps", token: s.admin,
				body: `{"hostname":"v1.example","hostname":"v2.example","ip_address":"999.1.1.1","ssh_port":"22",` +
					`"provider":"x","region":"y","colour":"blue"}`,
				want: []input.FieldError{
					{Field: "hostname", Detail: "is given more than once"},
					{Field: "ssh_port", Detail: "must be an integer"},
					{Field: "colour", Detail: "is not a known field"},
					{Field: "ip_address", Detail: "must be an IPv4 or IPv6 address"},
				},
			},
			{
				name: "create backup", method: "POST", path: "/api/v1/sites/" + site.TargetID + "/backups", token: s.tokenA,
				body: `{"type":"full","type":"files","retention_days":"7","at":"now"}`,
				want: []input.FieldError{
					{Field: "type", Detail: "is given more than once"},
					{Field: "retention_days", Detail: "must be an integer"},
					{Field: "at", Detail: "is not a known field"},
				},
			},
			{
				name: "create backup, invalid value too", method: "POST", path: "/api/v1/sites/" + site.TargetID + "/backups", token: s.tokenA,
				body: `{"type":"tape","retention_days":0,"retention_days":1,"at":"now","x":true}`,
				want: []input.FieldError{
					{Field: "retention_days", Detail: "is given more than once"},
					{Field: "at", Detail: "is not a known field"},
					{Field: "x", Detail: "is not a known field"},
					{Field: "type", Detail: "must be one of full, files, database"},
				},
			},
			{
				name: "put backup schedule", method: "PUT", path: "/api/v1/sites/" + site.TargetID + "/backup-schedule", token: s.tokenA,
				body: `{"frequency":"hourly","keep":"7","type":"full","type":"files","when":"03:00"}`,
				want: []input.FieldError{
					{Field: "keep", Detail: "must be an integer"},
					{Field: "type", Detail: "is given more than once"},
					{Field: "when", Detail: "is not a known field"},
					{Field: "frequency", Detail: "must be one of daily, weekly"},
				},
			},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := s.do(tc.method, tc.path, tc.token, tc.body)
				p := assertProblem(t, r, http.StatusUnprocessableEntity, "")
				if p.Type != "urn:chom:problem:validation" {
					t.Errorf("type = %q, want the validation problem", p.Type)
				}
				if diff := cmp.Diff(tc.want, p.Errors); diff != "" {
					t.Errorf("errors (-want +got):\n%s\nbody: %s", diff, r.body)
				}
			})
		}

		// Syntactically broken JSON stays a malformed-request problem, even
		// with field problems before the break.
		r := s.do("POST", "/api/v1/sites", s.tokenA, `{"owner":"x","domain":"a.example","domain":}`)
		if p := assertProblem(t, r, http.StatusBadRequest, ""); p.Type != "urn:chom:problem:malformed-request" || len(p.Errors) != 0 {
			t.Errorf("broken JSON: %s", r.body)
		}

		if after := s.snapshot(); after != before {
			t.Errorf("bad input changed the database: before %v, after %v", before, after)
		}
		if n := s.count("site_backups", ""); n != backupsBefore {
			t.Errorf("backups = %d, want %d", n, backupsBefore)
		}
		if n := s.count("backup_schedules", ""); n != schedulesBefore {
			t.Errorf("backup schedules = %d, want %d", n, schedulesBefore)
		}
	})
}

// A 409 for a value already taken names the field like a validation error.
func TestConflictNamesTheField(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, db *bun.DB) {
		s := newStack(t, db, stackOpts{noWorker: true})
		s.createSite(s.tokenA, "taken.example", "html")
		before := s.snapshot()

		// The same tenant, another spelling of the same domain (another
		// tenant's domain is no 409: see domains_test.go).
		r := s.do("POST", "/api/v1/sites", s.tokenA, `{"domain":"TAKEN.example.","site_type":"html"}`)
		p := assertProblem(t, r, http.StatusConflict, "")
		want := []input.FieldError{{Field: "domain", Detail: "is already in use by another site"}}
		if diff := cmp.Diff(want, p.Errors); diff != "" {
			t.Errorf("domain taken: errors (-want +got):\n%s", diff)
		}

		vps := `{"hostname":"dup.example","ip_address":"10.0.0.9","provider":"x","region":"y"}`
		if r := s.do("POST", "/api/v1/vps", s.admin, vps); r.status != http.StatusCreated {
			t.Fatalf("register vps: %d %s", r.status, r.body)
		}
		r = s.do("POST", "/api/v1/vps", s.admin, vps)
		p = assertProblem(t, r, http.StatusConflict, "")
		want = []input.FieldError{{Field: "hostname", Detail: "is already registered"}}
		if diff := cmp.Diff(want, p.Errors); diff != "" {
			t.Errorf("hostname taken: errors (-want +got):\n%s", diff)
		}

		before[4]++ // the one server registered above
		if after := s.snapshot(); after != before {
			t.Errorf("conflicts changed the database: before %v, after %v", before, after)
		}
	})
}
