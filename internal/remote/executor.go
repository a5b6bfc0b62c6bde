package remote

import (
	"context"
	"io/fs"
)

// Executor is what installing software on a machine needs of it: commands
// run as root, files put in place atomically with a mode, small files read
// back, checksums to skip transfers. *Client does it over SSH (with sudo for
// a non-root login), *Local on this machine (the management node
// bootstrapping itself on first boot), so a stage's node work is written
// once for both.
type Executor interface {
	// Run runs a POSIX shell command line as root and logs its output.
	Run(ctx context.Context, cmd string) error
	// Output runs cmd as root and returns its stdout, which is not logged.
	Output(ctx context.Context, cmd string) ([]byte, error)
	// UploadFile puts the local file src at dst (absolute) with mode; the
	// file appears atomically.
	UploadFile(ctx context.Context, src, dst string, mode fs.FileMode, progress ProgressFunc) error
	// WriteFile puts content at dst with mode, atomically; content is never logged.
	WriteFile(ctx context.Context, dst string, content []byte, mode fs.FileMode) error
	// ReadFile returns a small file (at most 16 MiB); a missing file is an
	// error wrapping fs.ErrNotExist.
	ReadFile(ctx context.Context, path string) ([]byte, error)
	// SHA256 returns the hex sha256 of a file; a missing file is an error
	// wrapping fs.ErrNotExist.
	SHA256(ctx context.Context, path string) (string, error)
	// Close releases the connection, if any.
	Close() error
}

var (
	_ Executor = (*Client)(nil)
	_ Executor = (*Local)(nil)
)
