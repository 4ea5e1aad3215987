package imagecheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoFile reads a file of the repository.
func repoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// deploy/Dockerfile keeps the image users build and the image CI builds in
// step; each way of breaking that is caught.
func TestDockerfileInStep(t *testing.T) {
	t.Parallel()
	text, goMod := repoFile(t, "deploy/Dockerfile"), repoFile(t, "go.mod")
	d, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(d, goMod); err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	ci := CIDockerfile(d)
	if i := strings.Index(text, "FROM scratch AS image\n"); i < 0 || !strings.HasSuffix(ci, text[i:]) {
		t.Errorf("CI's Dockerfile does not end with the image stage verbatim:\n%s", ci)
	}

	const imageFrom = "FROM scratch AS image\n"
	const rootRun = "RUN sh deploy/image-root.sh /out\n"
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"a file from another stage", imageFrom, imageFrom + "COPY --from=build /usr/local/go/bin/go /go\n", "copies only --from=root"},
		{"a file from the build context", imageFrom, imageFrom + "COPY deploy/chom.env.example /etc/chom.env\n", "copies only --from=root"},
		{"a file of root outside /out", imageFrom, imageFrom + "COPY --from=root /etc/ssl/certs /etc/ssl/certs\n", "only /out is built"},
		{"a RUN in the image", imageFrom, imageFrom + "RUN [\"/chom\", \"version\"]\n", "RUN in the image stage"},
		{"an ADD in the image", imageFrom, imageFrom + "ADD https://example.com/x /x\n", "ADD in the image stage"},
		{"a file written outside the script", rootRun, rootRun + "RUN echo hello >/out/etc/motd\n", "outside deploy/image-root.sh"},
		{"the script not run", rootRun, "RUN sh deploy/other.sh /out\n", "runs \"RUN sh deploy/image-root.sh /out\" 0 times"},
		{"a stage after the image", "", "\nFROM scratch AS debug\nCOPY --from=root /out/ /\n", "the last stage is"},
		{"another Go", "ARG GO_VERSION=1.26.11", "ARG GO_VERSION=1.25.0", "ARG GO_VERSION=1.25.0, but go.mod"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var planted string
			if c.old == "" {
				planted = text + c.new
			} else {
				if !strings.Contains(text, c.old) {
					t.Fatalf("deploy/Dockerfile has no %q to plant the mistake at", c.old)
				}
				planted = strings.Replace(text, c.old, c.new, 1)
			}
			d, err := Parse(planted)
			if err == nil {
				err = Check(d, goMod)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("planted %s: Check = %v, want an error containing %q", c.name, err, c.want)
			}
		})
	}
}
