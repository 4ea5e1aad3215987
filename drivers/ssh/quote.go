package ssh

import (
	"errors"
	"strings"
)

// errNUL is returned for an argument holding a NUL byte, which no shell word
// can carry.
var errNUL = errors.New("ssh: command argument contains a NUL byte")

// quote returns s as one single-quoted POSIX shell word: inside single quotes
// no character is special, and a single quote itself becomes quote,
// backslash, quote, quote (end the quoted word, an escaped quote, start a new
// one). Whatever s holds
// (;, $(…), `, newlines, quotes, globs), the shell passes it on as exactly one
// argument, byte for byte. It is the only way a value reaches a command line.
func quote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errNUL
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// command renders `sh -c SCRIPT chom ARG…`: script is one of the fixed scripts
// of this package and reads its values only as positional parameters ("$1"…),
// so a value is never parsed as shell syntax, whichever shell sshd runs the
// line with. Layout commands (operator configuration) are passed the same way,
// as arguments, and run by the script as "$@".
func command(script string, args ...string) (string, error) {
	var b strings.Builder
	b.WriteString("sh -c ")
	q, err := quote(script)
	if err != nil {
		return "", err
	}
	b.WriteString(q)
	b.WriteString(" chom")
	for _, a := range args {
		q, err := quote(a)
		if err != nil {
			return "", err
		}
		b.WriteByte(' ')
		b.WriteString(q)
	}
	return b.String(), nil
}
