// Package ipam is weft's IP address management: a store of address
// reservations in a directory on the node, shared by every weft CNI process
// running there at the same time.
//
// # Contract
//
// A Store hands out, for an Owner (container ID + interface name), one
// address from each configured range (at most one IPv4 and one IPv6 range),
// all of them or none. It never hands out a range's network address, the
// IPv4 broadcast address or an Options.Reserved address, never gives one
// address to two owners (also across processes and crashes), and never
// loses an address for good: a process killed at any instant (SIGKILL
// included) leaves a store that the next operation completes or rolls back.
// Reservations are stamped with the kernel boot ID; the first operation
// after a reboot (other than Usage) releases all reservations of the
// earlier boot. Addresses
// in ranges no longer configured stay held until released.
//
// Allocate, Release and Lookup cost a fixed number of system calls, however
// many addresses are reserved (about 63 for a dual-stack allocate plus
// release, counted before the regular-file checks of Damaged entries added
// one fstat(2) per file opened): they touch only the files named after the
// owner and the candidate addresses. Allocation probes from the range's
// cursor (the last address handed out), so its probe cost grows only with
// the run of taken addresses just after the cursor. Directory scans happen
// only in GC, Usage (names only) and the reclaim after a reboot; Release of
// an owner that holds nothing (a repeated DEL) is as cheap as any other.
//
// # On-disk layout
//
// The directory must be on a local file system with hard links, rename(2)
// and flock(2) (ext4, xfs, btrfs, tmpfs, overlayfs). Under Options.Dir:
//
//	lock                     flock(2) target; every operation holds it exclusively
//	hold/<cid>=<ifname>      flock(2) target of one owner's command in flight (Hold); removed after
//	boot                     boot ID the reservations belong to
//	owner/<cid>=<ifname>     a reservation record (the owner index)
//	addr/<address>           hard link to the same record, one per address
//	cursor/<prefix>          last address handed out in a range, e.g. cursor/10.244.1.0_24,
//	                         padded with spaces to a fixed width and rewritten in place
//	txn                      the one reservation being created or released (transient)
//	tmp                      scratch for replacing the boot file (transient)
//	damaged/<entry>.<time>   entries set aside (see Damaged entries); kept for a person to look at
//
// Cursor files of ranges no longer configured are left in place (a few
// bytes each). A record is a small text file (see record.marshal):
//
//	weft-ipam 1
//	owner 3f6a9c… eth0
//	boot 5b0d2d5e-3c4a-4f7e-9b61-0a4d7f5f2a11
//	addr 10.244.1.5
//	addr fd00:10:244:1::5
//
// # Operations
//
// Every operation takes the lock (waiting up to Options.LockTimeout, then
// failing with ErrLocked), then recovers: removes tmp, resolves txn, and
// reclaims the store if boot differs from this boot. Usage is a reader: it
// recovers but never reclaims, so a watcher that sees another boot ID (the
// agent in its container) cannot release the plugin's reservations.
//
// Allocate probes each range from its cursor for an address whose addr/
// file does not exist, writes the record to txn, links txn to addr/<a> for
// each address (link(2) fails with EEXIST on a taken address, so a file
// appears complete or not at all), then links txn to owner/<key> — the
// commit point — then moves the cursors and removes txn. Release renames
// owner/<key> to txn — from that instant the owner holds nothing — then
// removes each addr/<a> that is the same file (inode) as txn, then txn.
//
// # Damaged entries
//
// The store holds only regular files (and its subdirectories). Every file
// is opened with O_NOFOLLOW|O_NONBLOCK and checked to be a regular file
// before it is read or written, so a symbolic link is never followed and a
// FIFO or device never blocks an operation under the lock. A lock holder
// that meets an entry that is not a regular file (a directory, FIFO,
// symbolic link, socket or device in owner/, addr/, cursor/, or as txn, tmp
// or boot) moves it to damaged/ with a warning on Options.Log and carries on
// as if it were missing: one bad entry costs that entry only (an address
// whose addr/ entry was bad becomes free, as it has no record; a bad boot
// file reads as missing, and the reclaim it starts keeps every record of
// this boot). A FIFO or file in place of a subdirectory is set aside the
// same way (by Open or Check, under the lock) and the directory made again;
// listing a directory never blocks. The lock file is the exception: moving
// it needs the lock, so a lock that is not a regular file fails every
// operation with an error that says to remove it.
//
// # Invariants
//
// They hold whenever no operation is running or one has just recovered:
//
//  1. An address is reserved exactly when addr/<address> exists; one name
//     per address means no address has two owners.
//  2. A reservation is one immutable file, fully written before its first
//     link, with the names owner/<key> and addr/<a> for each of its
//     addresses: same inode, link count 1 + addresses. owner/<key> exists
//     exactly when the owner holds a reservation.
//  3. There is no txn and no tmp, and every addr/ file has its owner/ name.
//  4. Every record is stamped with the boot recorded in boot.
//
// While an operation runs, txn is the only extra name, and at most one txn
// exists (operations are serialised). Whoever takes the lock next resolves
// it: if owner/<key> is the same file as txn the allocation committed and
// only txn is removed; otherwise (allocation not committed, or a release)
// every addr/ link to txn is removed, then txn. These steps are idempotent,
// so a crash during recovery is recovered the same way. A txn too damaged
// to parse is resolved by its inode (its other names are found by a scan).
//
// Crash points, each exercised by the tests (TestCrashPoints): in the
// middle of writing txn (no links yet: txn removed); after txn or after
// each addr/ link (rolled back); after the owner link, in the middle of a
// cursor's write or after the cursors (rolled forward); after Release's rename or after
// each addr/ unlink (release completed); between reservations of a reclaim
// or GC (boot is written last, so the reclaim starts over; GC's finished
// releases stand). Cursors and tmp are hints and scratch: losing them loses
// nothing.
//
// The store does not fsync. Unsynced writes are lost only by a power loss
// or kernel crash, which is a reboot, after which every reservation is
// reclaimed; a record damaged that way fails to parse and counts as stale.
// Addresses whose owner record is gone some other way (removed by hand) are
// found by GC, which gives a kept owner its record back when all its
// addresses are intact and removes them otherwise.
package ipam
