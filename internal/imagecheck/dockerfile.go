package imagecheck

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The names and paths the Dockerfile and CI agree on.
const (
	// RootStage builds the image's file system into RootDir.
	RootStage = "root"
	// ImageStage is the final stage, FROM scratch: what ships.
	ImageStage = "image"
	// RootDir is where RootStage's script writes the file system.
	RootDir = "/out"
	// RootScript is the RUN line of RootStage that builds it, the one thing
	// CI runs in its place.
	RootScript = "RUN sh deploy/image-root.sh " + RootDir
	// RootTar is the archive of the script's output in CI's build context.
	RootTar = "root.tar"
)

// Instruction is one Dockerfile instruction, continuation lines joined.
type Instruction struct {
	Line int    // 1-based line of its first line
	Cmd  string // upper case: FROM, RUN, COPY…
	Args string // the rest, continuations joined by a space
}

// Stage is one FROM and the instructions up to the next.
type Stage struct {
	Name  string // after AS, lower case; "" when unnamed
	From  string // the base image
	Start int    // index into the file's lines of the FROM line
	Instr []Instruction
}

// Dockerfile is a parsed Dockerfile: the global ARGs before the first FROM,
// the stages, and the text's lines.
type Dockerfile struct {
	Args   []Instruction
	Stages []Stage
	lines  []string
}

// Parse splits a Dockerfile into instructions and stages. It understands
// what deploy/Dockerfile uses: comments, blank lines and backslash
// continuations (no parser directives, no heredocs).
func Parse(text string) (*Dockerfile, error) {
	d := &Dockerfile{lines: strings.Split(text, "\n")}
	for i := 0; i < len(d.lines); i++ {
		line := strings.TrimSpace(d.lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		start := i
		for strings.HasSuffix(line, `\`) && i+1 < len(d.lines) {
			i++
			next := strings.TrimSpace(d.lines[i])
			if strings.HasPrefix(next, "#") {
				next = ""
			}
			line = strings.TrimSpace(strings.TrimSuffix(line, `\`)) + " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := Instruction{Line: start + 1, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		switch {
		case in.Cmd == "FROM":
			f := strings.Fields(in.Args)
			st := Stage{Start: start}
			switch {
			case len(f) == 1:
				st.From = f[0]
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				st.From, st.Name = f[0], strings.ToLower(f[2])
			default:
				return nil, fmt.Errorf("line %d: FROM %s: want FROM IMAGE [AS NAME]", in.Line, in.Args)
			}
			d.Stages = append(d.Stages, st)
		case len(d.Stages) == 0:
			if in.Cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			d.Args = append(d.Args, in)
		default:
			s := &d.Stages[len(d.Stages)-1]
			s.Instr = append(s.Instr, in)
		}
	}
	if len(d.Stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return d, nil
}

// Stage returns the stage called name, or nil.
func (d *Dockerfile) Stage(name string) *Stage {
	for i := range d.Stages {
		if d.Stages[i].Name == name {
			return &d.Stages[i]
		}
	}
	return nil
}

// imageInstructions are what a FROM scratch stage can hold: no RUN (there is
// no shell, and CI's copy of the stage must not execute anything the user's
// does not), no ADD (a URL or an archive from the context is not in CI's
// context), no ONBUILD.
var imageInstructions = map[string]bool{
	"COPY": true, "ARG": true, "LABEL": true, "USER": true, "WORKDIR": true, "VOLUME": true,
	"EXPOSE": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true, "ENV": true, "STOPSIGNAL": true,
}

var copyFrom = regexp.MustCompile(`^--from=(\S+)\s+(.+)$`)

// Check reports every way the Dockerfile lets the image users build and the
// image CI builds (CIDockerfile) differ, and a Go version other than the one
// goMod's toolchain (or go) line names.
func Check(d *Dockerfile, goMod string) error {
	var errs []error
	last := d.Stages[len(d.Stages)-1]
	if last.Name != ImageStage || last.From != "scratch" {
		errs = append(errs, fmt.Errorf("the last stage is FROM %s AS %q, want FROM scratch AS %s (CI builds the last stage)", last.From, last.Name, ImageStage))
	}
	for _, in := range last.Instr {
		if !imageInstructions[in.Cmd] {
			errs = append(errs, fmt.Errorf("line %d: %s in the %s stage: CI's copy of it would not do the same (only %s may fill the image, through %s)", in.Line, in.Cmd, ImageStage, RootStage, RootDir))
			continue
		}
		if in.Cmd != "COPY" {
			continue
		}
		m := copyFrom.FindStringSubmatch(in.Args)
		if m == nil || m[1] != RootStage {
			errs = append(errs, fmt.Errorf("line %d: COPY %s: the %s stage copies only --from=%s (CI has no other stage and no build context)", in.Line, in.Args, ImageStage, RootStage))
			continue
		}
		srcs := strings.Fields(m[2])
		for _, src := range srcs[:len(srcs)-1] {
			if src != RootDir && !strings.HasPrefix(src, RootDir+"/") {
				errs = append(errs, fmt.Errorf("line %d: COPY --from=%s %s: only %s is built by deploy/image-root.sh, the rest of that stage is not in CI's", in.Line, RootStage, src, RootDir))
			}
		}
	}
	root := d.Stage(RootStage)
	if root == nil {
		errs = append(errs, fmt.Errorf("no %q stage", RootStage))
	} else {
		scripts := 0
		for _, in := range root.Instr {
			switch {
			case in.Cmd+" "+in.Args == RootScript:
				scripts++
			case strings.Contains(in.Args, RootDir):
				errs = append(errs, fmt.Errorf("line %d: %s %s writes %s outside deploy/image-root.sh: CI runs only the script; put it there", in.Line, in.Cmd, in.Args, RootDir))
			}
		}
		if scripts != 1 {
			errs = append(errs, fmt.Errorf("the %s stage runs %q %d times, want once", RootStage, RootScript, scripts))
		}
	}
	if want := goToolchain(goMod); want == "" {
		errs = append(errs, errors.New("go.mod names no Go version"))
	} else if got := argDefault(d.Args, "GO_VERSION"); got != want {
		errs = append(errs, fmt.Errorf("ARG GO_VERSION=%s, but go.mod builds with Go %s (CI's binary): the image's Go must be the same", got, want))
	}
	return errors.Join(errs...)
}

// CIDockerfile is the Dockerfile CI builds: a root stage holding RootTar
// (the output of deploy/image-root.sh) at RootDir, then the Dockerfile's
// image stage verbatim, from its FROM line to the end of the file.
func CIDockerfile(d *Dockerfile) string {
	last := d.Stages[len(d.Stages)-1]
	return fmt.Sprintf("# Built by internal/imagecheck: deploy/image-root.sh's output, then deploy/Dockerfile's %s stage as written.\n"+
		"FROM scratch AS %s\nADD %s %s/\n\n%s", ImageStage, RootStage, RootTar, RootDir, strings.Join(d.lines[last.Start:], "\n"))
}

// goToolchain is the Go version go.mod's toolchain line names (go1.26.11 →
// 1.26.11), else its go line's.
func goToolchain(goMod string) string {
	var goLine string
	for _, l := range strings.Split(goMod, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "toolchain" {
			return strings.TrimPrefix(f[1], "go")
		}
		if len(f) == 2 && f[0] == "go" {
			goLine = f[1]
		}
	}
	return goLine
}

// argDefault is the default of the global ARG name, "" when absent.
func argDefault(args []Instruction, name string) string {
	for _, a := range args {
		if k, v, ok := strings.Cut(a.Args, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
