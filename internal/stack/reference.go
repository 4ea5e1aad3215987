package stack

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// roleNames are the roles as the docs and --help name them.
var roleNames = []struct {
	role Role
	name string
}{
	{RoleIngress, "ingress"}, {RoleWorker, "worker"}, {RoleScheduler, "scheduler"},
	{RoleRelay, "relay"}, {RoleBilling, "billing-consumer"}, {RoleAdmin, "migrate/token"},
}

// String lists the processes of r, as the docs name them.
func (r Role) String() string {
	if r&roleServers == roleServers {
		if r&RoleAdmin != 0 {
			return "all"
		}
		return "all servers"
	}
	var names []string
	for _, n := range roleNames {
		if r&n.role != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// defaultText is how the docs and --help show a setting's default.
func (s Setting) defaultText() string {
	switch {
	case s.DefaultNote != "":
		return s.DefaultNote
	case s.Default != "":
		return "`" + s.Default + "`"
	}
	return "—"
}

// WriteEnvHelp writes the variables the processes of role read, with their
// defaults (chom dev's where dev is set), as `chom <cmd> --help` shows them.
func WriteEnvHelp(w io.Writer, role Role, dev bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Environment (default):")
	for _, s := range Settings() {
		if s.Roles&role == 0 {
			continue
		}
		def := strings.ReplaceAll(s.defaultText(), "`", "")
		if dev && s.Dev != "" {
			def = s.Dev
		}
		if len(def) > 28 {
			def = "(see below)" // a per-process default, spelled out in the docs
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Env, def, firstSentence(s.Doc))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write help: %w", err)
	}
	return nil
}

// firstSentence is the start of a setting's doc, short enough for a terminal.
func firstSentence(doc string) string {
	doc = strings.ReplaceAll(doc, "`", "")
	if i := strings.Index(doc, "; "); i > 0 {
		doc = doc[:i]
	}
	if len(doc) > 90 {
		cut := strings.LastIndex(doc[:90], " ")
		doc = doc[:max(cut, 60)] + " …"
	}
	return doc
}

// ConfigurationMarkdown is docs/configuration.md: every setting with its
// default, chom dev's default, the processes that read it and its meaning.
// TestConfigurationDoc keeps the file equal to it.
func ConfigurationMarkdown() string {
	var b strings.Builder
	b.WriteString(`# Configuration

<!-- Generated from internal/stack/settings.go by ` + "`go tool task docs:config`" + `; do not edit by hand. -->

Every CHOM process reads ` + "`CHOM_*`" + ` environment variables. The table below is generated from
the one loader (` + "`stack.LoadConfig`" + `), the only place a default lives, and a test keeps the two
equal. ` + "`chom <command> --help`" + ` prints the variables that command reads, with their defaults.
A bad value stops the process at start-up with one error naming every bad variable.

The **dev** column is what ` + "`chom dev`" + ` uses when the variable is unset (` + "`<data-dir>`" + ` is its
` + "`--data-dir`" + `, ` + "`./.chom-dev`" + ` by default; *embedded* means an in-process part: SQLite, Redis, a
Kafka-protocol broker or the development CA; *generated* means made once and kept in the data
directory). Setting the variable always wins.

| variable | default | dev | read by | meaning |
| --- | --- | --- | --- | --- |
`)
	for _, s := range Settings() {
		dev := ""
		if s.Dev != "" {
			dev = "`" + s.Dev + "`"
			if s.Dev == DevEmbedded || s.Dev == DevGenerated {
				dev = "*" + s.Dev + "*"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", s.Env, s.defaultText(), dev, s.Roles, strings.ReplaceAll(s.Doc, "|", `\|`))
	}
	b.WriteString("| `GOGC` | `400` |  | all | the Go collector's target; CHOM sets 400 when it is unset (its live heap is small: collecting less often bought 12% more accepted requests per second) |\n")
	b.WriteString(`
Test-only variables (` + "`CHOM_TEST_*`" + `, ` + "`CI`" + `) are listed in [development.md](development.md).
`)
	return b.String()
}
