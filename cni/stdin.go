package cni

import (
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/types"
)

// MaxStdin bounds the config the plugin reads from stdin. A conflist entry
// with its prevResult is a few KiB; GC's list of valid attachments grows by
// about 100 bytes per pod on the node.
const MaxStdin = 1 << 20

// readStdin reads r to its end, failing with code 6 (decoding failure) as
// soon as it passes max bytes: the plugin never holds more than that.
func readStdin(r io.Reader, max int) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("read stdin: %v", err), "")
	}
	if len(data) > max {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("stdin larger than %d bytes", max), "")
	}
	return data, nil
}
