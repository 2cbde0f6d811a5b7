package cni

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestReadStdin(t *testing.T) {
	tests := []struct {
		name string
		r    io.Reader
		n    int  // bytes read on success
		code uint // 0: success
	}{
		{name: "empty", r: strings.NewReader(""), n: 0},
		{name: "exactly the bound", r: bytes.NewReader(make([]byte, 1000)), n: 1000},
		{name: "one byte over", r: bytes.NewReader(make([]byte, 1001)), code: types.ErrDecodingFailure},
		{name: "endless", r: endless{}, code: types.ErrDecodingFailure},
		{name: "read error", r: failReader{}, code: types.ErrIOFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := readStdin(tc.r, 1000)
			if tc.code == 0 {
				if err != nil || len(data) != tc.n {
					t.Fatalf("readStdin = %d bytes, %v; want %d bytes", len(data), err, tc.n)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code {
				t.Fatalf("readStdin error %v, want code %d", err, tc.code)
			}
		})
	}
}

// endless is a stdin that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestErrorsClipValues(t *testing.T) {
	_, err := Parse([]byte(`{"podCIDRs":["` + strings.Repeat("9", 100_000) + `"]}`))
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error of %d bytes, want at most 300: %.200v", len(err.Error()), err)
	}
	if !strings.Contains(err.Error(), "podCIDRs[0]") || !strings.Contains(err.Error(), "(100002 bytes)") {
		t.Errorf("error %q does not name the field and the value's size", err)
	}
}
