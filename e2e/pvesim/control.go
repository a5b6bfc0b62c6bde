package pvesim

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Go API for tests and harnesses to inspect and change the emulated state.

func (s *Server) node(name string) (*node, error) {
	n := s.nodeByName(name)
	if n == nil {
		return nil, fmt.Errorf("pvesim: no node %q", name)
	}
	return n, nil
}

// NodeNames returns the node names (the first one answers the API).
func (s *Server) NodeNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.nodes {
		out = append(out, n.name)
	}
	return out
}

// SetNodeOnline marks a node online or offline (cluster membership and
// quorum follow; calls proxied to an offline node fail with 595).
func (s *Server) SetNodeOnline(name string, online bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.node(name)
	if err != nil {
		return err
	}
	n.online = online
	return nil
}

// SetNodeVersion sets the node's pve-manager version, e.g. "7.4-3".
func (s *Server) SetNodeVersion(name, version string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.node(name)
	if err != nil {
		return err
	}
	n.version = version
	return nil
}

// SetNodeBridges replaces the node's network bridges.
func (s *Server) SetNodeBridges(name string, bridges ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.node(name)
	if err != nil {
		return err
	}
	n.bridges = append([]string(nil), bridges...)
	return nil
}

// SetNodeResources sets the node's CPU count and memory (total, used by the host).
func (s *Server) SetNodeResources(name string, cpus int, memTotal, memUsed int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.node(name)
	if err != nil {
		return err
	}
	n.cpus, n.memTotal, n.memUsed = cpus, memTotal, memUsed
	return nil
}

// SetStorageEnabled enables or disables a storage cluster wide (storage.cfg "disable").
func (s *Server) SetStorageEnabled(storage string, enabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.storageCfg(storage)
	if c == nil {
		return fmt.Errorf("pvesim: no storage %q", storage)
	}
	c.disabled = !enabled
	return nil
}

// SetStorageActive sets whether a storage is online as seen from a node.
func (s *Server) SetStorageActive(nodeName, storage string, active bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(nodeName, storage)
	if in == nil {
		return fmt.Errorf("pvesim: no storage %q on node %q", storage, nodeName)
	}
	in.active = active
	return nil
}

// SetStorageCapacity sets a storage's total size in bytes.
func (s *Server) SetStorageCapacity(nodeName, storage string, total int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(nodeName, storage)
	if in == nil {
		return fmt.Errorf("pvesim: no storage %q on node %q", storage, nodeName)
	}
	in.total = total
	return nil
}

// StorageUsage returns total, used and available bytes of a storage on a node.
func (s *Server) StorageUsage(nodeName, storage string) (total, used, avail int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(nodeName, storage)
	if in == nil {
		return 0, 0, 0, fmt.Errorf("pvesim: no storage %q on node %q", storage, nodeName)
	}
	return in.total, in.used(), in.avail(), nil
}

// Volumes lists the volids on a storage as seen from a node.
func (s *Server) Volumes(nodeName, storage string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(nodeName, storage)
	if in == nil {
		return nil
	}
	var out []string
	for _, v := range in.vols {
		out = append(out, v.volid())
	}
	sort.Strings(out)
	return out
}

// AddFile places a file on a storage (volid "local:import/x.qcow2",
// "local:iso/x.iso", ...) as if it had been uploaded.
func (s *Server) AddFile(nodeName, volid string, data []byte) error {
	sid, volname, ok := strings.Cut(volid, ":")
	if !ok {
		return fmt.Errorf("pvesim: bad volid %q", volid)
	}
	content, filename, ok := strings.Cut(volname, "/")
	if !ok {
		return fmt.Errorf("pvesim: bad volid %q", volid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(nodeName, sid)
	if in == nil {
		return fmt.Errorf("pvesim: no storage %q on node %q", sid, nodeName)
	}
	format := filename[strings.LastIndex(filename, ".")+1:]
	dir := filepath.Join(s.opts.DataDir, "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "addfile-")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	f.Close()
	if err != nil {
		return err
	}
	_, err = s.storeFile(in, content, filename, format, f.Name(), int64(len(data)))
	return err
}

// VMInfo is a snapshot of a VM for tests.
type VMInfo struct {
	VMID    int
	Node    string
	Config  map[string]string // current config (PVE strings)
	Pending map[string]string
	Running bool
	Lock    string
}

// VM returns a snapshot of a VM.
func (s *Server) VM(vmid int) (VMInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return VMInfo{}, false
	}
	info := VMInfo{VMID: vmid, Node: v.node, Running: v.running, Lock: v.conf["lock"],
		Config: map[string]string{}, Pending: map[string]string{}}
	for k, val := range v.conf {
		info.Config[k] = val
	}
	for k, val := range v.pending {
		info.Pending[k] = val
	}
	return info, true
}

// VMIDs returns all VM ids.
func (s *Server) VMIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vmIDs()
}

// SetAgentRunning overrides whether a running VM's guest agent answers.
func (s *Server) SetAgentRunning(vmid int, up bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return fmt.Errorf("pvesim: no VM %d", vmid)
	}
	v.agentDown = !up
	return nil
}

// LockVM takes the exclusive config lock of a VM (as a concurrent PVE task
// would) until the returned function is called; calls that need the lock
// fail with "can't lock file ... - got timeout" meanwhile.
func (s *Server) LockVM(vmid int) (unlock func(), err error) {
	return s.lockConfig(vmid, true, s.lockTimeout(), nil)
}

// SetConfigLock sets (or clears with "") the "lock" property of a VM's
// config, as a crashed backup or migration would leave it.
func (s *Server) SetConfigLock(vmid int, lock string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return fmt.Errorf("pvesim: no VM %d", vmid)
	}
	if lock == "" {
		delete(v.conf, "lock")
	} else {
		v.conf["lock"] = lock
	}
	return nil
}
