package docscheck

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// maxReadmeBytes is the README's budget: a front door read in five minutes;
// the manual lives in docs/.
const maxReadmeBytes = 12 << 10

// problem is one finding, reported as file:line: msg. File is slash-separated
// and relative to the repository root; Line is 0 for a finding about a whole file.
type problem struct {
	File string
	Line int
	Msg  string
}

func (p problem) String() string {
	if p.Line == 0 {
		return p.File + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// link is one link destination as written, with the line it is on.
type link struct {
	Line int
	Dest string
}

// page is what the check needs of one Markdown file.
type page struct {
	anchors map[string]bool // GitHub heading slugs, duplicates numbered
	links   []link
}

var (
	// headingRe is an ATX heading: up to three spaces, one to six #, then text.
	headingRe = regexp.MustCompile(`^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	// inlineLinkRe is [text](dest) or ![alt](dest), with an optional title.
	inlineLinkRe = regexp.MustCompile(`\]\(\s*(<[^>\n]*>|[^()\s]+)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)`)
	// refDefRe is a reference definition: [label]: dest.
	refDefRe = regexp.MustCompile(`(?m)^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^>\n]*>|\S+)`)
	// headingLinkRe is a link inside a heading, whose text alone counts.
	headingLinkRe = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	// htmlTagRe is an inline HTML tag inside a heading.
	htmlTagRe = regexp.MustCompile(`<[^>]+>`)
	// schemeRe starts an absolute URL (https:, mailto:, ...).
	schemeRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// slug is GitHub's anchor for a heading (github-slugger): the rendered text
// lower-cased, everything but letters, marks, digits, connector punctuation
// (_), hyphens and spaces dropped, spaces turned into hyphens.
func slug(heading string) string {
	s := headingLinkRe.ReplaceAllString(heading, "$1")
	s = htmlTagRe.ReplaceAllString(s, "")
	s = strings.ToLower(strings.TrimSpace(s))
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.Pc):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// blankFences returns src with the contents of fenced code blocks (``` or ~~~)
// replaced by spaces, newlines kept, so offsets and line numbers still match.
func blankFences(src string) string {
	lines := strings.SplitAfter(src, "\n")
	var fence string // the opening fence while inside a block
	for i, l := range lines {
		t := strings.TrimLeft(l, " ")
		isFence := len(l)-len(t) <= 3 && (strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~"))
		if fence == "" {
			if isFence {
				fence = t[:len(t)-len(strings.TrimLeft(t, t[:1]))]
				lines[i] = blank(l)
			}
			continue
		}
		if isFence && strings.HasPrefix(t, fence) && strings.TrimSpace(strings.TrimLeft(t, fence[:1])) == "" {
			fence = ""
		}
		lines[i] = blank(l)
	}
	return strings.Join(lines, "")
}

// blankCodeSpans returns src with the contents of inline code spans replaced
// by 'x', so that a `[a](b)` in code is no link; backticks and newlines stay.
func blankCodeSpans(src string) string {
	b := []byte(src)
	run := func(i int) int { // length of the backtick run at i
		n := 0
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		return n
	}
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		n := run(i)
		closing := -1
		for j := i + n; j < len(b); {
			if b[j] != '`' {
				j++
				continue
			}
			m := run(j)
			if m == n {
				closing = j
				break
			}
			j += m
		}
		if closing < 0 {
			i += n
			continue
		}
		for k := i + n; k < closing; k++ {
			if b[k] != '\n' {
				b[k] = 'x'
			}
		}
		i = closing + n
	}
	return string(b)
}

func blank(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' {
			return r
		}
		return ' '
	}, s)
}

// parse finds the headings and link destinations of a Markdown file, outside
// fenced code blocks and inline code.
func parse(src string) page {
	text := blankFences(src)
	p := page{anchors: map[string]bool{}}
	seen := map[string]int{}
	for _, l := range strings.Split(text, "\n") {
		m := headingRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			p.anchors[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			p.anchors[s] = true
		}
		seen[s]++
	}
	code := blankCodeSpans(text)
	lineAt := func(off int) int { return strings.Count(code[:off], "\n") + 1 }
	for _, re := range []*regexp.Regexp{inlineLinkRe, refDefRe} {
		for _, m := range re.FindAllStringSubmatchIndex(code, -1) {
			dest := strings.TrimSuffix(strings.TrimPrefix(code[m[2]:m[3]], "<"), ">")
			p.links = append(p.links, link{Line: lineAt(m[2]), Dest: dest})
		}
	}
	sort.SliceStable(p.links, func(i, j int) bool { return p.links[i].Line < p.links[j].Line })
	return p
}

// markdownFiles lists the *.md files under root, slash-separated and relative,
// leaving out hidden directories (.git, .cache, .chom-dev), node_modules and
// testdata.
func markdownFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".md") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list markdown files under %s: %w", root, err)
	}
	sort.Strings(files)
	return files, nil
}

// target resolves a relative link of file (slash path relative to root) to a
// slash path relative to root and its anchor. external is true for a link
// that names a scheme or a host, which is not checked.
func target(file, dest string) (rel, anchor string, external bool, err error) {
	if schemeRe.MatchString(dest) || strings.HasPrefix(dest, "//") {
		return "", "", true, nil
	}
	p, anchor, _ := strings.Cut(dest, "#")
	p, _, _ = strings.Cut(p, "?")
	if p, err = url.PathUnescape(p); err != nil {
		return "", "", false, fmt.Errorf("bad escape in %q: %w", dest, err)
	}
	switch {
	case p == "":
		rel = file
	case strings.HasPrefix(p, "/"): // GitHub resolves it from the repository root
		rel = path.Clean(strings.TrimPrefix(p, "/"))
	default:
		rel = path.Join(path.Dir(file), p)
	}
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", "", false, fmt.Errorf("%q leaves the repository", dest)
	}
	return rel, anchor, false, nil
}

// checkLinks reports every relative link of files that names a missing file,
// leaves the repository, or names an anchor its target has no heading for.
func checkLinks(root string, files []string) ([]problem, error) {
	pages := map[string]page{}
	load := func(rel string) (page, error) {
		if pg, ok := pages[rel]; ok {
			return pg, nil
		}
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			return page{}, fmt.Errorf("read %s: %w", rel, err)
		}
		pg := parse(string(src))
		pages[rel] = pg
		return pg, nil
	}
	var out []problem
	for _, f := range files {
		pg, err := load(f)
		if err != nil {
			return nil, err
		}
		for _, l := range pg.links {
			rel, anchor, external, err := target(f, l.Dest)
			if external {
				continue
			}
			if err != nil {
				out = append(out, problem{f, l.Line, err.Error()})
				continue
			}
			info, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel)))
			if errors.Is(err, fs.ErrNotExist) {
				out = append(out, problem{f, l.Line, fmt.Sprintf("%q: no such file %s", l.Dest, rel)})
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("stat %s: %w", rel, err)
			}
			if anchor == "" {
				continue
			}
			if info.IsDir() || !strings.HasSuffix(rel, ".md") {
				out = append(out, problem{f, l.Line, fmt.Sprintf("%q: an anchor into %s, which is not a Markdown file", l.Dest, rel)})
				continue
			}
			tp, err := load(rel)
			if err != nil {
				return nil, err
			}
			if !tp.anchors[anchor] {
				out = append(out, problem{f, l.Line, fmt.Sprintf("%q: %s has no heading #%s", l.Dest, rel, anchor)})
			}
		}
	}
	return out, nil
}

// checkReadme reports a README.md over budget, and every docs/*.md page it
// does not link.
func checkReadme(root string) ([]problem, error) {
	var out []problem
	info, err := os.Stat(filepath.Join(root, "README.md"))
	if err != nil {
		return nil, fmt.Errorf("stat README.md: %w", err)
	}
	if info.Size() > maxReadmeBytes {
		out = append(out, problem{"README.md", 0, fmt.Sprintf("%d bytes, over the budget of %d: move the detail to docs/", info.Size(), maxReadmeBytes)})
	}
	src, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		return nil, fmt.Errorf("read README.md: %w", err)
	}
	linked := map[string]bool{}
	for _, l := range parse(string(src)).links {
		if rel, _, external, err := target("README.md", l.Dest); err == nil && !external {
			linked[rel] = true
		}
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, fmt.Errorf("list docs/*.md: %w", err)
	}
	for _, p := range pages {
		rel := "docs/" + filepath.Base(p)
		if !linked[rel] {
			out = append(out, problem{"README.md", 0, "does not link " + rel})
		}
	}
	return out, nil
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// TestRepositoryDocs runs the check on this repository.
func TestRepositoryDocs(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	// The walk must see the pages the README promises, or the check is empty.
	for _, want := range []string{"README.md", "docs/architecture.md", "docs/api.md", "docs/configuration.md",
		"docs/events.md", "docs/operations.md", "docs/performance.md", "docs/development.md", "docs/troubleshooting.md"} {
		if i := sort.SearchStrings(files, want); i == len(files) || files[i] != want {
			t.Errorf("%s is missing (Markdown files found: %v)", want, files)
		}
	}
	problems, err := checkLinks(root, files)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := checkReadme(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(problems, readme...) {
		t.Error(p)
	}
}

func TestSlug(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ heading, want string }{
		{"Health checks over SSH", "health-checks-over-ssh"},
		{"Invariants (each one has tests)", "invariants-each-one-has-tests"},
		{"`go run` does not pass signals on", "go-run-does-not-pass-signals-on"},
		{"Flags, settings and `--help`", "flags-settings-and---help"},
		{"What go tool task test runs", "what-go-tool-task-test-runs"},
		{"The accept path, step by step", "the-accept-path-step-by-step"},
		{"SQLite or PostgreSQL?", "sqlite-or-postgresql"},
		{"snake_case & 1.5×", "snake_case--15"},
		{"[Linked](docs/api.md) heading", "linked-heading"},
		{"Über <em>café</em>", "über-café"},
	} {
		if got := slug(tc.heading); got != tc.want {
			t.Errorf("slug(%q) = %q, want %q", tc.heading, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	src := "# Title\n" +
		"\n" +
		"See [a](a.md#part), ![img](i.png \"title\") and [ext](https://example.com/x.md).\n" +
		"Code `[not](a link)` and a span over\n" +
		"two lines `[no](x\n" +
		"y)` end. <https://example.com>\n" +
		"\n" +
		"```sh\n" +
		"# not a heading\n" +
		"[nor](this.md)\n" +
		"```\n" +
		"## Part\n" +
		"## Part\n" +
		"[ref]: <docs/b.md>\n"
	got := parse(src)
	wantLinks := []link{{3, "a.md#part"}, {3, "i.png"}, {3, "https://example.com/x.md"}, {14, "docs/b.md"}}
	if d := cmp.Diff(wantLinks, got.links); d != "" {
		t.Errorf("links (-want +got):\n%s", d)
	}
	wantAnchors := map[string]bool{"title": true, "part": true, "part-1": true}
	if d := cmp.Diff(wantAnchors, got.anchors); d != "" {
		t.Errorf("anchors (-want +got):\n%s", d)
	}
}

// TestCheckFindsProblems proves the check fails on what it is meant to catch,
// on a small repository in a temporary directory.
func TestCheckFindsProblems(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(rel, body string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	readme := "# Project\n\n" +
		"[ok](docs/a.md#section-two) [top](#project) [dir](docs) [abs](/docs/a.md)\n" +
		"[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [self](#absent)\n" +
		"[out](../outside.md) [anchor in code](main.go#L1) [web](https://example.com/#x)\n" +
		strings.Repeat("x", maxReadmeBytes)
	write("README.md", readme)
	write("docs/a.md", "# A\n\n## Section two\n\n[back](../README.md#project) [sibling](b.md)\n")
	write("docs/b.md", "# B\n\n[wrong](a.md#section-2)\n")
	write("main.go", "package main\n")
	write("node_modules/x/README.md", "[broken](nowhere.md)\n")
	write(".cache/y.md", "[broken](nowhere.md)\n")

	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"README.md", "docs/a.md", "docs/b.md"}, files); d != "" {
		t.Errorf("markdownFiles (-want +got):\n%s", d)
	}
	got, err := checkLinks(root, files)
	if err != nil {
		t.Fatal(err)
	}
	readmeProblems, err := checkReadme(root)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, readmeProblems...)
	want := []problem{
		{"README.md", 4, `"docs/missing.md": no such file docs/missing.md`},
		{"README.md", 4, `"docs/a.md#nowhere": docs/a.md has no heading #nowhere`},
		{"README.md", 4, `"#absent": README.md has no heading #absent`},
		{"README.md", 5, `"../outside.md" leaves the repository`},
		{"README.md", 5, `"main.go#L1": an anchor into main.go, which is not a Markdown file`},
		{"docs/b.md", 3, `"a.md#section-2": docs/a.md has no heading #section-2`},
		{"README.md", 0, fmt.Sprintf("%d bytes, over the budget of %d: move the detail to docs/", len(readme), maxReadmeBytes)},
		{"README.md", 0, "does not link docs/b.md"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
}
