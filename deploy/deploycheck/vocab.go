package deploycheck

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/chomhq/chom/internal/stack"
)

// Vocabulary is every name a deployment file may use: the CHOM_* variables
// of the settings table and the chom binary's commands with their flags.
type Vocabulary struct {
	// Settings are stack.Settings() by variable name.
	Settings map[string]stack.Setting
	// Commands are the binary's subcommands by name ("token create" for a
	// nested one).
	Commands map[string]Command
}

// Command is one chom subcommand as its --help describes it.
type Command struct {
	Name string
	// Flags maps each flag to whether it takes a value.
	Flags map[string]bool
	// Choices are the allowed first arguments ("up", "down", "status") when
	// the synopsis lists them; Free is set when it names a placeholder (ID);
	// neither: the command takes no arguments.
	Choices []string
	Free    bool
	// Subs are the names of its subcommands (token: create, list, revoke).
	Subs []string
}

// goRuntimeEnv are variables the Go runtime reads, which deployment files may
// set beside CHOM_* ones.
var goRuntimeEnv = []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG", "GOTRACEBACK"}

// HelpRunner runs the chom binary with args and returns its standard output.
type HelpRunner func(args ...string) (string, error)

// LoadVocabulary reads the settings table and asks the binary for its
// commands: `chom --help` lists them, `chom <cmd> --help` gives each one's
// synopsis, flags and subcommands. The names therefore come from the command
// table the binary runs, not from a copy.
func LoadVocabulary(run HelpRunner) (*Vocabulary, error) {
	v := &Vocabulary{Settings: map[string]stack.Setting{}, Commands: map[string]Command{}}
	for _, s := range stack.Settings() {
		v.Settings[s.Env] = s
	}
	top, err := run("--help")
	if err != nil {
		return nil, fmt.Errorf("chom --help: %w", err)
	}
	var names []string
	for _, line := range strings.Split(top, "\n") {
		if rest, ok := strings.CutPrefix(line, "  chom "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				names = append(names, f[0])
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("chom --help lists no commands:\n%s", top)
	}
	for _, n := range names {
		if err := v.addCommand(run, n); err != nil {
			return nil, err
		}
	}
	return v, nil
}

var (
	usageLine = regexp.MustCompile(`(?m)^Usage: chom (.*)$`)
	flagLine  = regexp.MustCompile(`^\s+-([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s+(\S+))?`)
)

func (v *Vocabulary) addCommand(run HelpRunner, name string) error {
	args := append(strings.Fields(name), "--help")
	out, err := run(args...)
	if err != nil {
		return fmt.Errorf("chom %s: %w", strings.Join(args, " "), err)
	}
	m := usageLine.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("chom %s --help: no usage line:\n%s", name, out)
	}
	synopsis := strings.Fields(strings.TrimPrefix(m[1], name))
	c := Command{Name: name, Flags: map[string]bool{}}
	for i, tok := range synopsis {
		switch {
		case tok == "[flags]" || strings.HasPrefix(tok, "-") || strings.HasPrefix(tok, "["):
		case i > 0 && strings.HasPrefix(synopsis[i-1], "-"): // a flag's value (--tenant NAME)
		case strings.Contains(tok, "|"):
			c.Choices = strings.Split(tok, "|")
		default:
			c.Free = true
		}
	}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch strings.TrimSpace(line) {
		case "Flags:", "Subcommands:":
			section = strings.TrimSpace(line)
			continue
		}
		if section == "Flags:" && strings.TrimSpace(line) == "" {
			section = "" // PrintDefaults writes no blank line: the flags ended
		}
		switch section {
		case "Flags:":
			if f := flagLine.FindStringSubmatch(line); f != nil {
				c.Flags[f[1]] = f[2] != ""
			}
		case "Subcommands:":
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "chom "+name+" "); ok {
				if f := strings.Fields(rest); len(f) > 0 && !slices.Contains(c.Subs, f[0]) {
					c.Subs = append(c.Subs, f[0])
				}
			}
		}
	}
	if len(c.Subs) > 0 {
		c.Choices, c.Free = nil, false
	}
	v.Commands[name] = c
	for _, s := range c.Subs {
		if err := v.addCommand(run, name+" "+s); err != nil {
			return err
		}
	}
	return nil
}

// CheckEnv reports a variable a chom process would not read: a CHOM_* name
// that is not in the settings table, or any other name but the Go runtime's.
func (v *Vocabulary) CheckEnv(name string) error {
	if strings.HasPrefix(name, "CHOM_") {
		if _, ok := v.Settings[name]; !ok {
			return fmt.Errorf("%s is not a CHOM setting (internal/stack/settings.go)%s", name, v.suggest(name))
		}
		return nil
	}
	if !slices.Contains(goRuntimeEnv, name) {
		return fmt.Errorf("%s is read neither by chom nor by the Go runtime", name)
	}
	return nil
}

// suggest names the closest setting, for a misspelling.
func (v *Vocabulary) suggest(name string) string {
	best, bestD := "", 4
	for s := range v.Settings {
		if d := distance(name, s); d < bestD {
			best, bestD = s, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// IsChom reports whether argv0 is the chom binary (/chom, /usr/local/bin/chom).
func IsChom(argv0 string) bool { return path.Base(argv0) == "chom" }

// CheckArgs reports what the binary would refuse in a chom command line (the
// arguments after the binary): an unknown subcommand, an unknown flag, a flag
// without its value, an argument the command does not take.
func (v *Vocabulary) CheckArgs(args []string) error {
	if len(args) == 0 {
		return errors.New("chom without a subcommand")
	}
	c, ok := v.Commands[args[0]]
	if !ok {
		return fmt.Errorf("chom %s: unknown subcommand %q", strings.Join(args, " "), args[0])
	}
	rest := args[1:]
	for len(c.Subs) > 0 {
		if len(rest) == 0 || !slices.Contains(c.Subs, rest[0]) {
			return fmt.Errorf("chom %s: want one of %s after %q", strings.Join(args, " "), strings.Join(c.Subs, ", "), c.Name)
		}
		c, rest = v.Commands[c.Name+" "+rest[0]], rest[1:]
	}
	var positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, rest[i:]...) // Go's flag package stops at the first argument
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, known := c.Flags[name]
		if name == "h" || name == "help" {
			known = true
		}
		if !known {
			return fmt.Errorf("chom %s: unknown flag -%s of chom %s", strings.Join(args, " "), name, c.Name)
		}
		if takesValue && !hasValue {
			if i+1 >= len(rest) {
				return fmt.Errorf("chom %s: flag -%s needs a value", strings.Join(args, " "), name)
			}
			i++
		}
	}
	switch {
	case len(positional) == 0 && len(c.Choices) > 0:
		return fmt.Errorf("chom %s: chom %s needs one of %s", strings.Join(args, " "), c.Name, strings.Join(c.Choices, "|"))
	case len(positional) == 0:
	case len(c.Choices) > 0:
		if !slices.Contains(c.Choices, positional[0]) {
			return fmt.Errorf("chom %s: %q is not one of %s", strings.Join(args, " "), positional[0], strings.Join(c.Choices, "|"))
		}
	case !c.Free:
		return fmt.Errorf("chom %s: chom %s takes no arguments", strings.Join(args, " "), c.Name)
	}
	return nil
}
