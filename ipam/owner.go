package ipam

import (
	"fmt"
	"strings"
)

// Owner identifies a reservation: one container's interface. It is the key
// of every reservation, as in CNI's (container ID, ifname) attachment.
type Owner struct{ ContainerID, IfName string }

// String returns "containerID/ifname".
func (o Owner) String() string { return o.ContainerID + "/" + o.IfName }

const (
	// maxIfName is the kernel's limit (IFNAMSIZ-1 bytes).
	maxIfName = 15
	// maxContainerID keeps the owner file name "<containerID>=<ifname>"
	// within the 255-byte limit of a file name.
	maxContainerID = 255 - 1 - maxIfName
	// keySep separates container ID and ifname in an owner file name; a
	// container ID never contains it.
	keySep = "="
)

// Validate reports whether o can name a reservation: a container ID of
// letters, digits, '_', '.' and '-' that starts with a letter or digit (the
// CNI specification's rule, which also makes it a safe file name), and an
// interface name the kernel would accept. Its error wraps ErrInvalid.
func (o Owner) Validate() error {
	if err := validContainerID(o.ContainerID); err != nil {
		return fmt.Errorf("owner ContainerID %s: %s: %w", clipQuote(o.ContainerID), err, ErrInvalid)
	}
	if err := validIfName(o.IfName); err != nil {
		return fmt.Errorf("owner IfName %s: %s: %w", clipQuote(o.IfName), err, ErrInvalid)
	}
	return nil
}

func validContainerID(id string) error {
	if id == "" {
		return errString("empty")
	}
	if len(id) > maxContainerID {
		return fmt.Errorf("%d bytes, at most %d", len(id), maxContainerID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("must start with a letter or digit, not %q", c)
		}
		if !alnum && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("character %q at %d: only letters, digits, '_', '.' and '-'", c, i)
		}
	}
	return nil
}

// validIfName applies the kernel's rule for device names (dev_valid_name):
// 1 to 15 bytes, not "." or "..", no '/', ':', NUL or white space.
func validIfName(name string) error {
	switch {
	case name == "":
		return errString("empty")
	case len(name) > maxIfName:
		return fmt.Errorf("%d bytes, at most %d", len(name), maxIfName)
	case name == "." || name == "..":
		return errString("not a valid interface name")
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '/', ':', 0, ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
			return fmt.Errorf("character %q at %d not allowed in an interface name", c, i)
		}
	}
	return nil
}

// clipQuote quotes s for an error, clipped to maxContainerID bytes (the
// longest valid value): an invalid one may be of any size.
func clipQuote(s string) string {
	if len(s) > maxContainerID {
		return fmt.Sprintf("%q…(%d bytes)", s[:maxContainerID], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// key is o's file name under owner/.
func (o Owner) key() string { return o.ContainerID + keySep + o.IfName }

// parseKey is the inverse of key.
func parseKey(name string) (Owner, error) {
	id, ifName, ok := strings.Cut(name, keySep)
	if !ok {
		return Owner{}, fmt.Errorf("owner file name %q: no %q: %w", name, keySep, ErrInvalid)
	}
	o := Owner{ContainerID: id, IfName: ifName}
	if err := o.Validate(); err != nil {
		return Owner{}, fmt.Errorf("owner file name %q: %w", name, err)
	}
	return o, nil
}

// validBootID accepts the kernel's boot_id (a UUID) and the simple names
// tests use: 1 to 128 letters, digits, '_', '.', ':' or '-'.
func validBootID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("boot ID %q: want 1 to 128 bytes: %w", id, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_.:-", c) >= 0) {
			return fmt.Errorf("boot ID %q: character %q at %d: %w", id, c, i, ErrInvalid)
		}
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }
