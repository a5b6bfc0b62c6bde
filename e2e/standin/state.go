package standin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StateRoot is where each harness prefix keeps its state file and instance directories
// ($OPENCSP_STANDIN_STATE, default /run/opencsp-standin; /run is cleared on reboot, as are the
// network namespaces and mounts it describes).
func StateRoot() string {
	if d := os.Getenv("OPENCSP_STANDIN_STATE"); d != "" {
		return d
	}
	return "/run/opencsp-standin"
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// ValidPrefix reports whether p can name a harness: 1-8 of [a-z0-9], starting with a letter, so
// that "<prefix>-br" and "<prefix>-v<n>" fit Linux's 15-byte interface names.
func ValidPrefix(p string) bool { return prefixRE.MatchString(p) }

type hostState struct {
	Prefix     string                    `json:"prefix"`
	OwnerPID   int                       `json:"ownerPid"`
	OwnerStart uint64                    `json:"ownerStart"`
	Bridge     string                    `json:"bridge,omitempty"`
	Subnet     string                    `json:"subnet,omitempty"`
	HostAddr   string                    `json:"hostAddress,omitempty"`
	NextIndex  int                       `json:"nextIndex"`
	Instances  map[string]*instanceState `json:"instances"`
}

type instanceState struct {
	Name        string `json:"name"`
	Machine     string `json:"machine"`
	Netns       string `json:"netns"`
	HostVeth    string `json:"hostVeth"`
	Dir         string `json:"dir"`
	NspawnPID   int    `json:"nspawnPid,omitempty"`
	NspawnStart uint64 `json:"nspawnStart,omitempty"`
}

// stateStore is the state file of one prefix, shared by everything of that prefix in a process.
type stateStore struct {
	mu   sync.Mutex
	dir  string
	path string
	st   hostState
}

var (
	storesMu sync.Mutex
	stores   = map[string]*stateStore{}
)

func openStore(prefix string) (*stateStore, error) {
	if !ValidPrefix(prefix) {
		return nil, fmt.Errorf("invalid harness prefix %q (1-8 of [a-z0-9], starting with a letter)", prefix)
	}
	dir := filepath.Join(StateRoot(), prefix)
	storesMu.Lock()
	defer storesMu.Unlock()
	if s, ok := stores[dir]; ok {
		return s, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		var old hostState
		if json.Unmarshal(b, &old) == nil && procAlive(old.OwnerPID, old.OwnerStart) && old.OwnerPID != os.Getpid() {
			return nil, fmt.Errorf("harness prefix %q is in use by process %d", prefix, old.OwnerPID)
		}
		return nil, fmt.Errorf("harness prefix %q has leftovers of a previous run in %s: call Cleanup first", prefix, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &stateStore{dir: dir, path: filepath.Join(dir, "state.json"), st: hostState{
		Prefix: prefix, OwnerPID: os.Getpid(), OwnerStart: procStart(os.Getpid()),
		Instances: map[string]*instanceState{},
	}}
	if err := s.writeLocked(); err != nil {
		return nil, err
	}
	stores[dir] = s
	return s, nil
}

func (s *stateStore) update(fn func(*hostState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.st)
	return s.writeLocked()
}

func (s *stateStore) writeLocked() error {
	b, err := json.MarshalIndent(s.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

func (s *stateStore) forget() {
	storesMu.Lock()
	delete(stores, s.dir)
	storesMu.Unlock()
}

// Cleanup removes everything a harness with this prefix created — also after a crash, when no
// handle is left: container processes (by the PIDs in the state file and by every process in the
// prefix's network namespaces), mounts below its state directory, its network namespaces, its
// links and bridge, and the state directory itself. Resources are recognised by their names
// ("<prefix>-..."), so leftovers are found even when the state file is stale or missing.
func Cleanup(ctx context.Context, prefix string) error {
	if !ValidPrefix(prefix) {
		return fmt.Errorf("invalid harness prefix %q", prefix)
	}
	dir := filepath.Join(StateRoot(), prefix)
	var st hostState
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	var errs []error
	// 1. nspawn processes: recorded ones, and any whose --machine= carries the prefix.
	for _, in := range st.Instances {
		if procAlive(in.NspawnPID, in.NspawnStart) {
			_ = syscall.Kill(in.NspawnPID, syscall.SIGKILL)
		}
	}
	for _, pid := range allPIDs() {
		cl := cmdline(pid)
		if strings.Contains(cl, "systemd-nspawn") && strings.Contains(cl, " --machine="+prefix+"-") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// 2. every process left in the prefix's network namespaces (the containers' systemd survives
	// a SIGKILLed nspawn).
	netnss := map[string]bool{}
	for _, in := range st.Instances {
		netnss[in.Netns] = true
	}
	for _, n := range listNetns() {
		if strings.HasPrefix(n, prefix+"-") {
			netnss[n] = true
		}
	}
	for n := range netnss {
		if err := killNetns(n, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// nspawn's own runtime files, left behind when it was SIGKILLed.
	for _, in := range st.Instances {
		removeNspawnLeftovers(in.Machine, filepath.Join(in.Dir, "merged"))
	}
	if ents, err := os.ReadDir("/run/systemd/nspawn/propagate"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix+"-") {
				removeNspawnLeftovers(e.Name(), "")
			}
		}
	}
	// 3. mounts (overlays) below the state directory and below recorded instance dirs.
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	}
	for _, in := range st.Instances {
		if in.Dir != "" {
			if err := unmountAll(in.Dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// 4. network namespaces, 5. links and bridge.
	for n := range netnss {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
			if err := run(ctx, "ip", "netns", "delete", n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, l := range listLinks() {
		if strings.HasPrefix(l, prefix+"-") {
			if err := run(ctx, "ip", "link", "delete", l); err != nil && linkExists(l) {
				errs = append(errs, err)
			}
		}
	}
	// 6. files.
	for _, in := range st.Instances {
		if in.Dir != "" && !strings.HasPrefix(in.Dir, dir+"/") {
			if err := safeRemoveAll(in.Dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := safeRemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	storesMu.Lock()
	delete(stores, dir)
	storesMu.Unlock()
	return errors.Join(errs...)
}

// CleanupStale runs Cleanup for every prefix under StateRoot whose owning process is gone, and
// returns the prefixes it cleaned.
func CleanupStale(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(StateRoot())
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var cleaned []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !ValidPrefix(e.Name()) {
			continue
		}
		var st hostState
		if b, err := os.ReadFile(filepath.Join(StateRoot(), e.Name(), "state.json")); err == nil {
			if json.Unmarshal(b, &st) == nil && procAlive(st.OwnerPID, st.OwnerStart) {
				continue
			}
		}
		if err := Cleanup(ctx, e.Name()); err != nil {
			errs = append(errs, err)
		}
		cleaned = append(cleaned, e.Name())
	}
	return cleaned, errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// removeNspawnLeftovers removes systemd-nspawn's runtime files of a machine: the propagation
// directory (named after the machine) and the image lock (named after the root directory's
// device and inode). A cleanly exiting nspawn removes both itself.
func removeNspawnLeftovers(machine, rootDir string) {
	if machine != "" && !strings.Contains(machine, "/") {
		_ = os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", machine))
	}
	if rootDir == "" {
		return
	}
	var st syscall.Stat_t
	if err := syscall.Stat(rootDir, &st); err == nil {
		_ = os.Remove(fmt.Sprintf("/run/systemd/nspawn/locks/inode-%d:%d", st.Dev, st.Ino))
	}
}
