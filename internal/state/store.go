package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked means another process holds the state dir's lock.
var ErrLocked = errors.New("state dir is locked by another process")

// ErrCorrupt means state.json exists but cannot be understood.
var ErrCorrupt = errors.New("state file is corrupt")

// LockedError is returned by Open when another process holds the lock.
// It matches ErrLocked with errors.Is.
type LockedError struct {
	Dir string
	PID int // 0 if the holder's pid could not be read
}

func (e *LockedError) Error() string {
	pid := "pid unknown"
	if e.PID > 0 {
		pid = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("state dir %s is in use by another opencsp process (%s); wait for it to finish or stop it", e.Dir, pid)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// CorruptError is returned when state.json cannot be decoded. It matches
// ErrCorrupt with errors.Is. The file is never reset silently: it holds the
// only record of what was created, so the user decides.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is corrupt: %v; it was left untouched: move it aside (mv %s %s.broken) to start from an empty state, or restore a backup",
		e.Path, e.Err, e.Path, e.Path)
}

// Unwrap returns the decoding error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Store is an open, locked state dir. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	mu   sync.Mutex
	lock *os.File // nil once closed
}

// tempPrefix names Save's temporary files; leftovers from a killed process
// are removed by the next Open.
const tempPrefix = FileName + ".tmp-"

// Open creates dir (0700) if needed and takes an exclusive, non-blocking lock
// on <dir>/state.lock, held until Close. If another process holds it, Open
// fails at once with a *LockedError naming that process's pid: waiting would
// look like a hang, and two installers on one state would race each other.
func Open(ctx context.Context, dir string) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	// No O_TRUNC: the file may hold the pid of the current lock holder.
	lf, err := os.OpenFile(filepath.Join(dir, LockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := flock(lf, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := readPID(lf)
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
	}
	// The pid is only informative (for the message above); the flock, which
	// the kernel drops when the process dies, is what excludes others.
	if err := writePID(lf); err != nil {
		lf.Close()
		return nil, fmt.Errorf("record pid in %s: %w", lf.Name(), err)
	}
	removeStaleTemps(dir)
	return &Store{dir: dir, lock: lf}, nil
}

// Dir returns the state dir as given to Open.
func (s *Store) Dir() string { return s.dir }

// Path returns the path of state.json.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Load reads state.json. A missing file is an empty state; an unreadable or
// corrupt one is an error (a *CorruptError for bad content).
func (s *Store) Load() (*File, error) {
	return readFile(s.Path())
}

// Save writes f to state.json atomically: a temp file in the same dir is
// written, fsynced, made 0600 and renamed over state.json, then the dir is
// fsynced. A crash at any point leaves either the old or the new file, never
// a partial one. Save sets f.Version (if unset) and f.UpdatedAt.
func (s *Store) Save(f *File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return errors.New("save state: store is closed")
	}
	if f.Version == 0 {
		f.Version = Version
	}
	f.UpdatedAt = time.Now().UTC()
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := writeAtomic(s.dir, FileName, append(data, '\n')); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// Close releases the lock. It is safe to call more than once. The lock file
// itself stays: deleting it would let a process that already opened it lock
// a file nobody else can see.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	lf := s.lock
	s.lock = nil
	_ = lf.Truncate(0) // forget our pid; best effort
	unlockErr := flock(lf, unix.LOCK_UN)
	closeErr := lf.Close()
	if err := errors.Join(unlockErr, closeErr); err != nil {
		return fmt.Errorf("release state lock: %w", err)
	}
	return nil
}

// Peek reads <dir>/state.json without taking the lock, for status displays.
// Because Save renames complete files into place, Peek never sees a partial
// file, though the state may change right after it is read.
func Peek(dir string) (*File, error) {
	return readFile(filepath.Join(dir, FileName))
}

// LockHolder reports whether another process holds dir's lock, and its pid
// if known. It probes with a shared lock for an instant, so an Open racing
// with it may fail with ErrLocked; use it only for display.
func LockHolder(dir string) (pid int, held bool, err error) {
	lf, err := os.Open(filepath.Join(dir, LockFileName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("open state lock: %w", err)
	}
	defer lf.Close()
	if err := flock(lf, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return readPID(lf), true, nil
		}
		return 0, false, fmt.Errorf("probe state lock: %w", err)
	}
	_ = flock(lf, unix.LOCK_UN)
	return 0, false, nil
}

func readFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return NewFile(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return decode(path, data)
}

func decode(path string, data []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	if f.Version == 0 {
		return nil, &CorruptError{Path: path, Err: errors.New("no format version")}
	}
	if f.Version > Version {
		return nil, fmt.Errorf("state file %s has format version %d, this opencsp understands up to %d: use the newer opencsp that wrote it", path, f.Version, Version)
	}
	if f.Stages == nil {
		f.Stages = map[string]*Stage{}
	}
	for name, st := range f.Stages {
		if st == nil {
			delete(f.Stages, name)
		}
	}
	return &f, nil
}

func writeAtomic(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	// Chmod explicitly: the mode must not depend on how the temp file was made.
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	// Persist the rename itself, or a power loss could bring back the old file.
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps deletes temp files left by a process killed inside Save.
// Only called while holding the lock, so no live Save owns them.
func removeStaleTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
