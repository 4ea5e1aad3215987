package ssh_test

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// sshdBin is Debian's OpenSSH server (package openssh-server).
const sshdBin = "/usr/sbin/sshd"

// sshd is a real OpenSSH server on loopback, run by the test.
type sshd struct {
	Addr    string
	Port    int
	HostKey string       // authorized_keys form
	Client  gossh.Signer // a key in its authorized_keys
	User    string
	Log     string // path of its log
}

// genKey returns a new ed25519 key as a signer and as an OpenSSH PEM block.
func genKey(t *testing.T) (gossh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, pem.EncodeToMemory(block)
}

func authorized(k gossh.PublicKey) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

// startSSHD runs /usr/sbin/sshd -D -e with a config, host key and
// authorized_keys of its own on a free loopback port, until the test ends.
// A missing sshd skips the test, or fails it when CI is set.
func startSSHD(t *testing.T) *sshd {
	t.Helper()
	if _, err := os.Stat(sshdBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found and CI=%q: the SSH probe must be tested against a real sshd; apt-get install openssh-server", sshdBin, os.Getenv("CI"))
		}
		t.Skipf("%s not found; apt-get install openssh-server", sshdBin)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if u.Uid == "0" {
		// sshd refuses to start without its privilege separation directory,
		// which only the packaged service creates.
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	dir := t.TempDir()
	hostSigner, hostPEM := genKey(t)
	clientSigner, _ := genKey(t)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostKeyPath := write("host_ed25519", string(hostPEM), 0o600)
	authPath := write("authorized_keys", authorized(clientSigner.PublicKey())+"\n", 0o600)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cfgPath := write("sshd_config", fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 50
`, port, hostKeyPath, authPath, filepath.Join(dir, "sshd.pid")), 0o600)
	logPath := filepath.Join(dir, "sshd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshdBin, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if banner(addr) {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("sshd did not answer on %s within 10s:\n%s", addr, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &sshd{Addr: addr, Port: port, HostKey: authorized(hostSigner.PublicKey()), Client: clientSigner, User: u.Username, Log: logPath}
}

// banner reports whether an SSH server greets on addr.
func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-")
}

// fingerprint is the SHA-256 fingerprint ("SHA256:…") of a key in
// authorized_keys form, as `ssh-keygen -lf` prints it.
func fingerprint(t testing.TB, key string) string {
	t.Helper()
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return gossh.FingerprintSHA256(k)
}
