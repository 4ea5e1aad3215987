package ssh

// The scripts below are the only shell the driver sends. They are constants:
// every value (paths, names, file contents' destination, Layout commands)
// arrives as a positional parameter and is only ever expanded inside double
// quotes, so no value is parsed as shell syntax. File contents come on stdin.
// Each script converges: it checks what exists and changes only what
// differs, so running it twice is the same as once.

// scriptUser creates the site's system user (home = site root, no login
// shell) unless it exists, under a server-wide lock because useradd refuses
// to run while another holds /etc/passwd. Args: user, home, lock file.
const scriptUser = `set -eu
user=$1 home=$2 lock=$3
if id -u "$user" >/dev/null 2>&1; then echo same; exit 0; fi
mkdir -p "$(dirname "$lock")"
exec 9>"$lock"
flock -w 60 9
if id -u "$user" >/dev/null 2>&1; then echo same; exit 0; fi
useradd --system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin "$user"
echo changed
`

// scriptDirs creates or converges the site's directories (the Isolation
// section of docs/operations.md states the model):
//   - the site root (root, 0755: the site user cannot rename or replace what
//     is in it);
//   - the document root, the site user's with the web group (0750): nginx's
//     workers read it, no other site's user does;
//   - tmp, sessions and logs (php-error.log), the site user's alone (0700);
//   - the nginx log directory, root's with the web group (0750): nginx's
//     master opens access.log and error.log there as root, so the site user
//     must not be able to create, delete or replace anything in it (else a
//     link there makes root write where the site says). A directory of the
//     old layout (owned by the site user) is taken back first, then anything
//     in it that is not a regular file of one link (a link, a directory, a
//     fifo, a hard link to a file elsewhere) is removed and the site user's
//     files are given to root: the order matters, so nothing new can appear
//     between the two;
//   - the root-only state directory.
//
// Every step converges, so running it on a site of either layout leaves the
// same result; it prints "changed" when an owner, a mode or an entry of the
// log directory differs afterwards, else "same". Args: user, web group, site
// root, document root, tmp, sessions, php logs, log dir, state dir.
const scriptDirs = `set -eu
user=$1 group=$2 root=$3 docroot=$4 tmp=$5 sessions=$6 phplogs=$7 logs=$8 state=$9
snap() {
	stat -c '%n %u %g %a %F' "$root" "$docroot" "$tmp" "$sessions" "$phplogs" "$logs" "$state" 2>/dev/null || true
	find -P "$logs" -mindepth 1 -maxdepth 1 -printf '%f %U %G %y %n\n' 2>/dev/null || true
}
before=$(snap)
install -d -m 0755 -o root -g root "$root"
install -d -m 0750 -o "$user" -g "$group" "$docroot"
install -d -m 0700 -o "$user" -g "$user" "$tmp" "$sessions" "$phplogs"
install -d -m 0750 -o root -g "$group" "$logs"
find -P "$logs" -mindepth 1 -maxdepth 1 \( ! -type f -o -links +1 \) -exec rm -rf -- {} +
find -P "$logs" -mindepth 1 -maxdepth 1 -type f -user "$user" -exec chown -h root:root -- {} +
install -d -m 0700 -o root -g root "$state"
if [ "$before" = "$(snap)" ]; then echo same; else echo changed; fi
`

// scriptWriteIfMissing writes stdin to a file that does not exist yet (the
// starter page: a tenant's own index is never overwritten). Args: path, owner.
const scriptWriteIfMissing = `set -eu
f=$1 owner=$2
tmp="$f.chom-tmp"
cat > "$tmp"
if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$tmp"; echo same; exit 0; fi
chown "$owner:$owner" "$tmp"
chmod 0644 "$tmp"
mv -n "$tmp" "$f"
rm -f "$tmp"
echo changed
`

// scriptWriteFile replaces a root-owned configuration file with stdin unless
// it already holds exactly that, keeping the previous version as
// <file>.chom-prev so a rejected configuration can be put back, and links it
// from a second directory when a link path is given. Args: path, link ("" for
// none).
const scriptWriteFile = `set -eu
f=$1 link=$2
mkdir -p "$(dirname "$f")"
tmp="$f.chom-tmp"
cat > "$tmp"
chmod 0644 "$tmp"
rm -f "$f.chom-prev"
if [ -f "$f" ] && cmp -s "$tmp" "$f"; then
	rm -f "$tmp"
	state=same
else
	if [ -f "$f" ]; then cp -p "$f" "$f.chom-prev"; fi
	mv -f "$tmp" "$f"
	state=changed
fi
if [ -n "$link" ] && [ "$(readlink "$link" || true)" != "$f" ]; then
	mkdir -p "$(dirname "$link")"
	ln -sfn "$f" "$link"
	state=changed
fi
echo "$state"
`

// scriptCheckOrRollback runs a configuration check (the remaining args) and,
// when it fails, puts the previous file back (or removes the new one and its
// link) and exits 3 with the check's output on stderr. On success it drops
// the saved previous version. Args: path, link ("" for none), check argv….
const scriptCheckOrRollback = `set -u
f=$1 link=$2
shift 2
if out=$("$@" 2>&1); then rm -f "$f.chom-prev"; exit 0; fi
if [ -f "$f.chom-prev" ]; then
	mv -f "$f.chom-prev" "$f"
else
	rm -f "$f"
	if [ -n "$link" ]; then rm -f "$link"; fi
fi
printf '%s\n' "$out" >&2
exit 3
`

// scriptExec runs its arguments as a command (the Layout's reload commands).
const scriptExec = `"$@"`

// scriptRemove removes files (configuration, links, sockets) and reports
// whether any existed. Args: paths….
const scriptRemove = `set -eu
state=same
for f in "$@"; do
	if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$f"; state=changed; fi
done
echo "$state"
`

// scriptDatabase creates the site's database and its user. The password is
// generated here on first provision and kept in a root-only env file; it
// reaches mysql on stdin only, never a command line, CHOM or a log. Names are
// [a-z0-9_] (checked by the driver). Args: env file, database, user, mysql
// argv….
const scriptDatabase = `set -eu
env=$1 db=$2 user=$3
shift 3
umask 077
mkdir -p "$(dirname "$env")"
if ! grep -q '^DB_PASSWORD=[0-9a-f]\{64\}$' "$env" 2>/dev/null; then
	pw=$(head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n')
	printf 'DB_NAME=%s\nDB_USER=%s\nDB_PASSWORD=%s\n' "$db" "$user" "$pw" > "$env.tmp"
	chmod 0600 "$env.tmp"
	mv -f "$env.tmp" "$env"
fi
pw=$(sed -n 's/^DB_PASSWORD=//p' "$env")
"$@" <<EOF
CREATE DATABASE IF NOT EXISTS ` + "\\`$db\\`" + ` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$user'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON ` + "\\`$db\\`" + `.* TO '$user'@'localhost';
EOF
`

// scriptDropDatabase drops the site's database and user if they exist.
// Args: database, user, mysql argv….
const scriptDropDatabase = `set -eu
db=$1 user=$2
shift 2
"$@" <<EOF
DROP DATABASE IF EXISTS ` + "\\`$db\\`" + `;
DROP USER IF EXISTS '$user'@'localhost';
EOF
`

// scriptRemoveSite removes the site's directories and its system user (and
// group). rm -rf does not follow symbolic links a tenant planted. Args: user,
// lock file, directories….
const scriptRemoveSite = `set -eu
user=$1 lock=$2
shift 2
rm -rf -- "$@"
if id -u "$user" >/dev/null 2>&1; then
	mkdir -p "$(dirname "$lock")"
	exec 9>"$lock"
	flock -w 60 9
	userdel --force "$user" 2>/dev/null || { id -u "$user" >/dev/null 2>&1 && userdel --force "$user"; }
fi
if getent group "$user" >/dev/null 2>&1; then groupdel "$user" || true; fi
`

// scriptHasFile prints yes when a file exists. Args: path.
const scriptHasFile = `if [ -e "$1" ]; then echo yes; else echo no; fi`

// scriptArchive writes a tar+gzip stream of the site to stdout: the document
// root as files/ and, when asked, a consistent mysqldump as database.sql
// (dumped to the root-only state directory first, removed afterwards). Args:
// site root, state dir, files (1|0), database (1|0), database name,
// mysqldump argv….
const scriptArchive = `set -eu
root=$1 state=$2 files=$3 db=$4 name=$5
shift 5
dump="$state/database.sql"
set -- "$@" --single-transaction --quick --routines --triggers --events "$name"
trap 'rm -f "$dump" "$dump.tmp"' EXIT
if [ "$db" = 1 ]; then
	umask 077
	mkdir -p "$state"
	"$@" > "$dump.tmp"
	mv -f "$dump.tmp" "$dump"
fi
if [ "$files" = 1 ] && [ "$db" = 1 ]; then
	tar -czf - --transform 's,^public,files,' -C "$root" public -C "$state" database.sql
elif [ "$files" = 1 ]; then
	tar -czf - --transform 's,^public,files,' -C "$root" public
else
	tar -czf - -C "$state" database.sql
fi
`

// scriptReceive stores stdin as the staged archive of a restore, in a fresh
// root-only staging directory. Args: staging dir.
const scriptReceive = `set -eu
stage=$1
rm -rf "$stage"
mkdir -p -m 0700 "$stage"
cat > "$stage/archive.tar.gz"
`

// scriptRestore extracts the staged archive into a staging directory beside
// the document root and checks it holds what kind needs. For a database it
// first imports database.sql into a scratch database (<name>_chom_restore),
// so a dump that does not import leaves the live database as it was; only
// then does it empty the live database (dropped and created again: the site
// user's grants on it stay) and import the dump there, so the database holds
// exactly what the backup held and not also the tables created since. Then it
// swaps the new document root into place with renames on one filesystem and
// removes the staging (and the scratch database). A live tree an interrupted
// restore left as .chom-old with no public/ beside it is put back first. It runs only after the
// archive was received completely. The restored document root gets the
// layout's owner and mode (the site user's, with the web group, 0750).
// Args: staging dir, site root, user, web group, files (1|0), database (1|0),
// database name, mysql argv….
const scriptRestore = `set -eu
stage=$1 root=$2 user=$3 group=$4 files=$5 db=$6 name=$7
shift 7
x="$root/.chom-restore"
scratch="${name}_chom_restore"
cleanup() {
	rm -rf "$x" "$stage"
	if [ "$db" = 1 ]; then
		"$@" <<EOF || true
DROP DATABASE IF EXISTS ` + "\\`$scratch\\`" + `;
EOF
	fi
}
trap 'cleanup "$@"' EXIT
# A restore killed between its two renames left no public/ and the live tree
# as .chom-old: put it back first, so this one failing leaves the site as it was.
` + repairInterrupted + `
rm -rf "$x"
mkdir -m 0700 "$x"
tar -xzf "$stage/archive.tar.gz" -C "$x" --no-same-owner --no-same-permissions --delay-directory-restore
# files/ must be a directory, not a link to one (the chown and chmod below
# would act on the link's target): checkArchive refuses such an archive
# before it gets here; this is the server's own check.
if [ "$files" = 1 ] && { [ -L "$x/files" ] || [ ! -d "$x/files" ]; }; then echo "archive holds no files/ directory" >&2; exit 4; fi
if [ "$db" = 1 ] && [ ! -f "$x/database.sql" ]; then echo "archive holds no database.sql" >&2; exit 4; fi
if [ "$db" = 1 ]; then
	"$@" <<EOF
DROP DATABASE IF EXISTS ` + "\\`$scratch\\`" + `;
CREATE DATABASE ` + "\\`$scratch\\`" + ` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
EOF
	if ! "$@" "$scratch" < "$x/database.sql"; then
		echo "database.sql does not import; the database is unchanged" >&2
		exit 5
	fi
	"$@" <<EOF
DROP DATABASE ` + "\\`$scratch\\`" + `;
DROP DATABASE IF EXISTS ` + "\\`$name\\`" + `;
CREATE DATABASE ` + "\\`$name\\`" + ` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
EOF
	"$@" "$name" < "$x/database.sql"
fi
if [ "$files" = 1 ]; then
	chown -R -P "$user:$user" "$x/files"
	chown -h "$user:$group" "$x/files"
	chmod 0750 "$x/files"
	rm -rf "$root/.chom-old"
	if [ -e "$root/public" ]; then mv "$root/public" "$root/.chom-old"; fi
	mv "$x/files" "$root/public"
	rm -rf "$root/.chom-old"
fi
`

// repairInterrupted puts back the live tree a restore killed between its two
// renames left as .chom-old (no public/ beside it). $root is the site root.
const repairInterrupted = `if [ ! -e "$root/public" ] && [ ! -L "$root/public" ] && [ -d "$root/.chom-old" ]; then
	mv "$root/.chom-old" "$root/public"
fi`

// scriptRepairRestore is repairInterrupted alone, for a restore refused
// before scriptRestore ran (checkArchive). Args: site root.
const scriptRepairRestore = `set -eu
root=$1
` + repairInterrupted + `
`

// scriptRemoveStage removes a restore's staging directories. Args: dirs….
const scriptRemoveStage = `rm -rf -- "$@"`

// scriptDiskBytes prints the size of every regular file under a document root,
// one per line, without following symbolic links (a link counts as nothing,
// so a link to / cannot inflate a bill); files that vanish meanwhile are
// skipped. A missing document root prints nothing. Args: document root.
const scriptDiskBytes = `set -eu
d=$1
if [ ! -d "$d" ]; then exit 0; fi
find -P "$d" -ignore_readdir_race -type f -printf '%s\n'
`

// scriptListLogs prints "<mtime seconds> <name>" for each regular file named
// access.log* directly in a site's log directory; a missing directory prints
// nothing. Args: log directory.
const scriptListLogs = `set -eu
d=$1
if [ ! -d "$d" ]; then exit 0; fi
find -P "$d" -mindepth 1 -maxdepth 1 -type f -name 'access.log*' -printf '%T@ %f\n'
`

// scriptReadLog opens one log file once, prints the device and inode of what
// it opened ("<dev>:<ino>") on a line of its own, then the file. A file gone
// since the listing prints nothing. What is not a regular file reached
// without a link prints "refused: <why>" instead and nothing else.
//
// It never follows a link, with no window between a check and the open: the
// shell cannot open with O_NOFOLLOW and a `[ -L ]` test before `cat` is a race
// (the name can become a link in between), so the open is perl's sysopen with
// O_NOFOLLOW (a link as last element fails with ELOOP) and O_NONBLOCK (a fifo
// cannot hang the reader), and the type is checked on the opened descriptor
// (fstat), so the bytes read are those of the inode checked. perl-base is
// Essential in Debian: every server has it. The directories above the file
// are root's (scriptDirs), so no element of the path is the site's to
// replace. Args: path.
const scriptReadLog = `exec perl -e '
use strict; use warnings; use Fcntl qw(O_RDONLY O_NOFOLLOW O_NONBLOCK);
my $f = shift;
my $fh;
if (!sysopen($fh, $f, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)) {
	exit 0 if $!{ENOENT};
	if ($!{ELOOP}) { print "refused: a symbolic link\n"; exit 0; }
	die "open $f: $!\n";
}
my @st = stat($fh) or die "fstat $f: $!\n";
if (!-f _) { print "refused: not a regular file\n"; exit 0; }
binmode($fh); binmode(STDOUT);
syswrite(STDOUT, "$st[0]:$st[1]\n") or die "write: $!\n";
while (1) {
	my $n = sysread($fh, my $buf, 65536);
	die "read $f: $!\n" unless defined $n;
	last if $n == 0;
	my $off = 0;
	while ($off < $n) {
		my $w = syswrite(STDOUT, $buf, $n - $off, $off);
		die "write: $!\n" unless defined $w;
		$off += $w;
	}
}
' "$1"
`
