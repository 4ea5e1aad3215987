package ssh_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chomhq/chom/drivers/ssh"
)

// debianOutput is ProbeCommand's output on a Debian 12 VPS.
const debianOutput = `@@loadavg
0.52 0.58 0.59 1/389 12345
@@nproc
4
@@meminfo
MemTotal:        8137564 kB
MemFree:          412340 kB
MemAvailable:    5123400 kB
Buffers:          201112 kB
Cached:          4100000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
@@df
Filesystem         1-blocks        Used   Available Capacity Mounted on
/dev/vda1       84279922688 18683342848 61948624896      24% /
`

func TestParseOutput(t *testing.T) {
	t.Parallel()
	debian := ssh.Metrics{
		Load1: 0.52, Load5: 0.58, Load15: 0.59, CPUs: 4,
		MemTotalBytes: 8137564 * 1024, MemAvailableBytes: 5123400 * 1024,
		DiskTotalBytes: 84279922688, DiskFreeBytes: 61948624896,
	}
	tests := []struct {
		name    string
		out     string
		want    ssh.Metrics
		wantErr []string // substrings of the error; nil means success
	}{
		{name: "debian 12", out: debianOutput, want: debian},
		{name: "CRLF and a motd before", out: "Welcome!\r\n" + strings.ReplaceAll(debianOutput, "\n", "\r\n"), want: debian},
		{name: "sections reordered, unknown section", out: "@@extra\nfoo\n" +
			debianOutput[strings.Index(debianOutput, "@@df"):] + debianOutput[:strings.Index(debianOutput, "@@df")], want: debian},
		{name: "old kernel without MemAvailable", out: strings.Replace(debianOutput, "MemAvailable:    5123400 kB\n", "", 1),
			want: func() ssh.Metrics { m := debian; m.MemAvailableBytes = (412340 + 201112 + 4100000) * 1024; return m }()},
		{name: "long device name on its own line is still one -P line", out: strings.Replace(debianOutput, "/dev/vda1", "/dev/mapper/vg0-very--long--logical--volume--name", 1), want: debian},
		{name: "empty", out: "", wantErr: []string{"loadavg: section missing", "nproc: section missing", "meminfo: section missing", "df: section missing"}},
		{name: "garbage", out: "\x00\xff binary junk\n@@loadavg\nNaN 1 2\n@@nproc\n-3\n@@meminfo\nMemTotal: lots kB\n@@df\n/dev/x a b c d /\n",
			wantErr: []string{`loadavg: bad load average "NaN"`, `nproc: bad processor count "-3"`, "meminfo: no MemTotal", "df: bad line"}},
		{name: "truncated loadavg", out: strings.Replace(debianOutput, "0.52 0.58 0.59 1/389 12345", "0.52", 1), wantErr: []string{"want 3 load averages"}},
		{name: "df header only", out: debianOutput[:strings.Index(debianOutput, "/dev/vda1")], wantErr: []string{"df: section missing"}},
		{name: "command not found", out: "@@loadavg\n0.1 0.2 0.3 1/2 3\n@@nproc\nsh: 1: nproc: not found\n", wantErr: []string{"nproc: bad processor count"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ssh.ParseOutput(tt.out)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseOutput: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseOutput succeeded with %+v", got)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestParseOutputLongGarbage(t *testing.T) {
	t.Parallel()
	_, err := ssh.ParseOutput("@@nproc\n" + strings.Repeat("x", 10000) + "\n")
	if err == nil || len(err.Error()) > 400 {
		t.Errorf("error of %d bytes: a server's garbage must not flood logs", len(err.Error()))
	}
}
