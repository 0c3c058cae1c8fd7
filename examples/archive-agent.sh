#!/bin/bash
#
# An example archive agent for scoutfs-ts, in the shell, on the `scoutfs`
# CLI only: what a real agent (tape, object store) does, with a directory
# standing in for the archive.
#
#   archive-agent.sh archive MNT ARCHIVE-DIR FILE...
#       Copy each FILE (inside the scoutfs mount MNT) to ARCHIVE-DIR as
#       <ino>.<data_version>, then release its blocks: the file keeps its
#       name, size and attributes, its data goes offline.  A file whose
#       data_version changes during the copy is left alone (release would
#       refuse it anyway: ESTALE).
#   archive-agent.sh serve MNT ARCHIVE-DIR
#       Until killed: watch `scoutfs data-waiting`; for each inode that a
#       task waits on, find its path (`scoutfs ino-path`) and stage the
#       archived copy of its current data_version back (`scoutfs stage`);
#       when there is none, fail the waiters with EIO (`scoutfs
#       data-wait-err`), so no reader hangs forever.
#   archive-agent.sh demo MNT ARCHIVE-DIR
#       The whole cycle on a new 8 MiB file: write it, archive and release
#       it, start `serve`, read the file (the read waits until the agent
#       has staged it), compare the bytes, stop the agent.
#
# SCOUTFS names the CLI (default: bin/scoutfs of this checkout);
# POLL_SECONDS the serve loop's pause (default 0.2).  Must run as root,
# like the reference's ioctls (the mount's control channel is root's).
#
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCOUTFS=${SCOUTFS:-"$HERE/../bin/scoutfs"}
POLL_SECONDS=${POLL_SECONDS:-0.2}

die() { echo "archive-agent: $*" >&2; exit 1; }
say() { echo "archive-agent: $*"; }

archive_one() {
	local mnt=$1 arch=$2 file=$3 ino vers size
	[ -f "$file" ] || { say "skipping $file: not a regular file"; return 0; }
	ino=$(stat -c %i "$file") || return 1
	vers=$("$SCOUTFS" stat -s data_version "$file") || return 1
	size=$(stat -c %s "$file") || return 1
	if [ "$vers" = 0 ] || [ "$size" = 0 ]; then say "skipping $file: never written"; return 0; fi
	cp --sparse=never "$file" "$arch/$ino.$vers.tmp" || return 1
	if [ "$("$SCOUTFS" stat -s data_version "$file")" != "$vers" ]; then
		rm -f "$arch/$ino.$vers.tmp"
		say "skipping $file: it changed while it was copied"
		return 0
	fi
	sync -f "$arch/$ino.$vers.tmp" 2>/dev/null || true
	mv "$arch/$ino.$vers.tmp" "$arch/$ino.$vers" || return 1
	"$SCOUTFS" release "$file" -V "$vers" || return 1
	say "archived $file (ino $ino, data_version $vers) and released it"
}

cmd_archive() {
	local mnt=$1 arch=$2 f
	shift 2
	[ $# -gt 0 ] || die "archive needs files"
	for f in "$@"; do archive_one "$mnt" "$arch" "$f" || die "archiving $f failed"; done
}

# Bring back one inode tasks wait for, or fail its waiters.
serve_one() {
	local mnt=$1 arch=$2 ino=$3 rel path vers
	rel=$("$SCOUTFS" ino-path "$ino" -p "$mnt" 2>/dev/null | head -n 1)
	if [ -z "$rel" ]; then
		# Unlinked while open: without a path there is no data_version to
		# name, so neither stage nor data-wait-err can reach it.
		say "ino $ino has no path (unlinked while open?); skipping it"
		return 0
	fi
	path="$mnt$rel"
	vers=$("$SCOUTFS" stat -s data_version "$path") || return 0
	if [ -f "$arch/$ino.$vers" ]; then
		if "$SCOUTFS" stage "$arch/$ino.$vers" "$path" -V "$vers"; then
			say "staged $path (ino $ino, data_version $vers) back"
			return 0
		fi
		say "staging $path failed; its waiters get EIO"
	else
		say "no archived copy of $path at data_version $vers; its waiters get EIO"
	fi
	"$SCOUTFS" data-wait-err -p "$mnt" -I "$ino" -V "$vers" -F 0 -C 0x7fffffffffffffff -O read,write,change_size -E EIO >/dev/null || true
}

cmd_serve() {
	local mnt=$1 arch=$2 line ino seen
	say "serving $mnt from $arch (pid $$)"
	trap 'say "stopped"; exit 0' TERM INT
	while :; do
		seen=" "
		while read -r line; do
			ino=$(echo "$line" | awk '{print $2}')
			case "$seen" in *" $ino "*) continue ;; esac
			seen="$seen$ino "
			serve_one "$mnt" "$arch" "$ino"
		done < <("$SCOUTFS" data-waiting -I 0 -B 0 -p "$mnt" || true)
		sleep "$POLL_SECONDS"
	done
}

cmd_demo() {
	local mnt=$1 arch=$2 file agent sum0 sum1
	file="$mnt/archive-agent-demo.$$"
	say "writing 8 MiB of random data to $file"
	head -c $((8 << 20)) /dev/urandom > "$file" || die "cannot write $file"
	sum0=$(sha256sum < "$file" | cut -d' ' -f1)
	"$SCOUTFS" stat "$file"
	cmd_archive "$mnt" "$arch" "$file"
	"$SCOUTFS" stat "$file"
	say "starting the agent"
	"$0" serve "$mnt" "$arch" &
	agent=$!
	say "reading $file: the read waits until the agent stages it"
	sum1=$(sha256sum < "$file" | cut -d' ' -f1)
	kill "$agent"
	wait "$agent"
	"$SCOUTFS" stat "$file"
	rm -f "$file"
	if [ "$sum0" != "$sum1" ]; then die "the bytes read back differ: $sum0 != $sum1"; fi
	say "the bytes read back are identical (sha256 $sum1)"
}

[ $# -ge 3 ] || die "usage: $0 {archive MNT ARCHIVE-DIR FILE... | serve MNT ARCHIVE-DIR | demo MNT ARCHIVE-DIR}"
cmd=$1
mnt=$(cd "$2" && pwd) || die "no mount at $2"
arch=$3
shift 3
mkdir -p "$arch" || die "cannot make $arch"
case "$cmd" in
archive) cmd_archive "$mnt" "$arch" "$@" ;;
serve) cmd_serve "$mnt" "$arch" ;;
demo) cmd_demo "$mnt" "$arch" ;;
*) die "unknown command $cmd" ;;
esac
